"""Traces: the teacher's message split into reasoning and response, and the one assembly of the traces table.

`assemble` joins the planned requests with the cache's columns (Arrow and polars, no Python object per trace):
one row per (question, sample) with the question's columns, the teacher's reasoning and response, tokens, cost and
latency, and `error` where the cache has no response.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from medr1_data.schema import TRACE_FIELDS, TRACE_SCHEMA, conform
from medr1_data.teacher.plan import Plan
from medr1_data.teacher.prices import cost_column
from medr1_data.teacher.settings import TeacherSettings

OPEN, CLOSE = "<think>", "</think>"
SPLIT_BATCH_ROWS = 16384


@dataclass
class Assembled:
    """The traces table, how many planned rows have no response, and the first of them (id, sample_idx)."""

    table: pa.Table
    missing: int
    first_missing: tuple[str, int] | None


def split_reasoning(message: dict[str, Any]) -> tuple[str | None, str]:
    """(reasoning, response) from a chat message: `reasoning_content`, `reasoning`, or inline `<think>` in content."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        return reasoning.strip(), content.strip()
    start = content.find(OPEN)  # the first <think> and the first </think> after it (a regex is 30x slower here)
    end = content.find(CLOSE, start + len(OPEN)) if start >= 0 else -1
    if end >= 0:
        return content[start + len(OPEN) : end].strip(), (content[:start] + content[end + len(CLOSE) :]).strip()
    if "</think>" in content:  # R1 chat templates pre-fill the opening <think>; only the close comes back
        head, _, tail = content.partition("</think>")
        return head.replace("<think>", "", 1).strip(), tail.strip()
    if content.lstrip().startswith("<think>"):  # cut off while thinking: all reasoning, no response
        return content.lstrip()[len("<think>") :].strip(), ""
    return None, content.strip()


@functools.cache
def _py_whitespace() -> list[str]:
    """The characters `str.strip()` removes (Python's str.isspace), so that the columnar path strips exactly like it."""
    return [chr(c) for c in range(0x110000) if chr(c).isspace()]


def assemble(
    table: pa.Table, plan: Plan, holder: list[pa.Table], errors: dict[str, str], teacher: TeacherSettings
) -> Assembled:
    """One row per planned request: the question's columns plus its trace from the cache, or `error` where the
    cache has no response. `holder` is a one-item list holding the cache's columns (`ResponseCache.read_columns`),
    emptied here so that the cache's memory goes as soon as the needed rows are taken."""
    cache = holder.pop()
    price = teacher.price()
    rows, samples, keys = zip(*plan.requests, strict=True) if plan.requests else ((), (), ())
    last = (  # equal keys: the last record wins, as in `ResponseCache.load`
        pl.from_arrow(cache.select(["key"])).with_row_index("j").group_by("key").agg(pl.col("j").max())
    )
    order = pl.DataFrame({"key": list(keys)}, schema={"key": pl.String}).join(
        last, on="key", how="left", maintain_order="left"
    )
    take = order["j"].to_arrow().cast(pa.int64())
    present = pc.is_valid(take)
    recs = cache.select(["model", "template", "finish_reason", "latency_s", "usage"]).take(take)
    usage = recs.column("usage")
    prompt_tokens = pc.struct_field(usage, "prompt_tokens")  # struct_field keeps a null usage's rows null
    completion_tokens = pc.struct_field(usage, "completion_tokens")
    cost = cost_column(usage, price)
    missing = take.null_count
    first_missing = None
    if missing:
        first = pc.index(present, False).as_py()
        first_missing = (table.column("id")[rows[first]].as_py(), samples[first])
    error = pa.array([None if p else errors.get(k, "missing") for p, k in zip(present.to_pylist(), keys, strict=True)])
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "sample_idx": pa.array(samples, pa.int32()),
        "teacher_model": pc.if_else(present, recs.column("model"), teacher.model),
        "prompt_template": pc.if_else(present, recs.column("template"), teacher.template),
        "finish_reason": recs.column("finish_reason"),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost_usd": pc.if_else(present, cost, pa.scalar(None, pa.float64())),
        "latency_s": recs.column("latency_s"),
        "error": error,
    }
    del recs, usage
    columns["reasoning"], columns["response"] = _split_columns(cache, order["j"], pl.from_arrow(present))
    del cache
    out = table.take(pa.array(rows, pa.int64()))
    for f in TRACE_FIELDS:
        if f.name in out.column_names:
            out = out.drop_columns([f.name])
        out = out.append_column(f, columns.pop(f.name).cast(f.type))
    return Assembled(conform(out, TRACE_SCHEMA), missing, first_missing)


def _split_columns(cache: pa.Table, take: Any, present: Any) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """`split_reasoning` for the cache rows `take` (a polars index Series, null: missing): columnar where the
    thinking is in its own field (the API's and vLLM's shapes), `split_reasoning` itself for the rest (thinking
    inline in the content, or none).

    polars reads the cache's strings in place (views); the text is copied once, into the output, a batch of rows at
    a time, so that the step holds the cache, the output and one batch, not several copies of every trace.
    """
    msg = pl.from_arrow(cache.select(["message"])).unnest("message")
    nonempty = [pl.when(pl.col(c) != "").then(pl.col(c)) for c in ("reasoning_content", "reasoning")]
    texts = (msg.select(pl.coalesce(nonempty))[:, 0], msg["content"].fill_null(""))
    own = texts[0].is_not_null().gather(take).fill_null(False) & present
    inline = (~own & present).arg_true()
    parsed = dict(
        zip(
            inline.to_list(),
            map(split_reasoning, msg["content"].gather(take.gather(inline)).to_frame("content").to_dicts()),
            strict=True,
        )
    )
    space = _py_whitespace()
    out: list[list[pa.Array]] = [[], []]
    for start in range(0, max(len(take), 1), SPLIT_BATCH_ROWS):
        rows = take.slice(start, SPLIT_BATCH_ROWS)
        keep = own.slice(start, SPLIT_BATCH_ROWS)
        here = [i - start for i in parsed if start <= i < start + SPLIT_BATCH_ROWS]
        for k, text in enumerate(texts):
            col = pl.select(pl.when(keep).then(text.gather(rows)))[:, 0]
            # only values that start or end with whitespace are stripped, in Python: exactly `str.strip`
            edge = (col.str.head(1).is_in(space) | col.str.tail(1).is_in(space)).fill_null(False).arg_true()
            if len(edge):
                col = col.scatter(edge, [v.strip() for v in col.gather(edge).to_list()])
            if here:
                col = col.scatter(here, [parsed[start + i][k] for i in here])
            out[k].append(col.to_arrow(compat_level=pl.CompatLevel.newest()).cast(pa.string()))
    return pa.chunked_array(out[0], pa.string()), pa.chunked_array(out[1], pa.string())
