"""What a distill run would request and cost, before anything is spent."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from medr1_data.teacher.cache import CACHE_COLUMNS, ResponseCache
from medr1_data.teacher.plan import missing_jobs, plan_requests
from medr1_data.teacher.settings import TeacherSettings

# Mean completion length of the 862 real DeepSeek-R1 completions on medical MCQs in ../shared/data/traces
# (thinking included; median 1017, p95 4573): the estimate's guess before the cache has responses of the model.
R1_MEAN_COMPLETION_TOKENS = 1600
BYTES_PER_TOKEN = 4.0  # prompt-size guess for the estimate (R1's tokenizer gives about 4.4 on English text)
MIN_OBSERVED = 20  # cached responses of the model needed before their numbers replace the guesses
ESTIMATE_COLUMNS = pa.schema([CACHE_COLUMNS.field(name) for name in ("key", "model", "usage")])  # no trace text


def _size(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].encode("utf-8")) for m in messages)


def _observed(cache: pa.Table, keys: dict[str, int], model: str) -> pl.DataFrame:
    """(prompt bytes, prompt tokens, completion tokens) of the cached responses of `model` this table needs."""
    df = pl.from_arrow(cache.select(["key", "model", "usage"])).unnest("usage")
    reported = pl.col("prompt_tokens").is_not_null() | pl.col("completion_tokens").is_not_null()
    df = df.filter((pl.col("model") == model) & pl.col("key").is_in(list(keys)) & reported)
    df = df.unique("key", keep="last", maintain_order=True)
    return df.select(
        pl.col("key").replace_strict(keys, return_dtype=pl.Int64).alias("bytes"),
        pl.col("prompt_tokens"),
        pl.col("completion_tokens"),
    )


def estimate(table: pa.Table, teacher: TeacherSettings) -> list[tuple[str, str]]:
    """What the run would request and cost, before anything is spent: (what, value) rows.

    Prompt tokens: the messages' UTF-8 bytes / 4 (or the ratio observed on cached responses of this model).
    Completion tokens: the mean over cached responses of this model when there are 20 or more, else the recipe's
    `expected_completion_tokens`, else 1600 (the mean of 862 real DeepSeek-R1 completions on medical MCQs). Input
    is priced as cache misses (an upper bound: DeepSeek bills prefix-cache hits lower), output at the output price;
    the worst case prices every completion at `max_tokens`.
    """
    teacher.check()
    plan = plan_requests(table, teacher)
    cache = ResponseCache(teacher.cache).read_columns(ESTIMATE_COLUMNS)
    jobs = missing_jobs(table, plan, set(cache.column("key").to_pylist()))
    price = teacher.price()
    sizes = [_size(msgs) for msgs in plan.messages]
    seen = _observed(cache, {k: sizes[i] for i, _, k in plan.requests}, teacher.model)
    bytes_per_token, completions = BYTES_PER_TOKEN, seen["completion_tokens"].drop_nulls()
    if seen.height >= MIN_OBSERVED:
        prompted = seen.filter(pl.col("prompt_tokens") > 0)
        if prompted.height:
            bytes_per_token = prompted["bytes"].sum() / prompted["prompt_tokens"].sum()
    if seen.height >= MIN_OBSERVED and len(completions) >= MIN_OBSERVED:
        per_completion = float(completions.mean())
        basis = f"mean of {len(completions)} cached responses of {teacher.model}"
    elif teacher.expected_completion_tokens:
        per_completion, basis = float(teacher.expected_completion_tokens), "the recipe's expected_completion_tokens"
    else:
        per_completion, basis = float(R1_MEAN_COMPLETION_TOKENS), "mean of 862 real DeepSeek-R1 completions"
    if per_completion > teacher.max_tokens:  # no completion can be longer than the cap: say so, not the guess
        basis = f"max_tokens={teacher.max_tokens}, below the {per_completion:,.0f} of {basis}"
        per_completion = float(teacher.max_tokens)
    prompt = sum(_size(j.messages) / bytes_per_token + 4 * len(j.messages) for j in jobs)
    completion = per_completion * len(jobs)
    cost = (prompt * price.input_cache_miss + completion * price.output) / 1e6
    worst = (prompt * price.input_cache_miss + teacher.max_tokens * len(jobs) * price.output) / 1e6
    return [
        ("rows (question x sample)", str(len(plan.requests))),
        ("requests to make (not in the cache)", str(len(jobs))),
        ("served from the cache", str(len({k for _, _, k in plan.requests}) - len(jobs))),
        ("prompt tokens (estimated)", f"{prompt:,.0f} ({bytes_per_token:.2f} bytes/token)"),
        ("completion tokens (estimated)", f"{completion:,.0f} ({per_completion:,.0f} each: {basis})"),
        (
            "price USD per 1M (hit / miss / out)",
            f"{price.input_cache_hit:g} / {price.input_cache_miss:g} / {price.output:g}",
        ),
        ("price source", price.note),
        ("estimated cost (USD)", f"{cost:,.2f}"),
        (f"worst case, every completion at max_tokens={teacher.max_tokens} (USD)", f"{worst:,.2f}"),
    ]
