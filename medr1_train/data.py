"""Release rows → filtered, split chat examples → tokens with assistant-only labels; over-length rows are counted.

The labels cover the assistant turn only, found in one of three ways (`loss_mask`): the `{% generation %}` markers
of the student's (or the recipe's) chat template, TRL's training version of a template it knows, or, for any other
template, TRL's prompt–completion split: the tokens after the prompt rendered with its generation prompt.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medr1_data.prompts import THINK_INLINE_FORMAT, get_template
from medr1_data.shards import MANIFEST, read_manifest, release_files
from medr1_train.config import ConfigError, DataConfig

IGNORE_INDEX = -100
# How the assistant's tokens are found (`loss_mask`); recorded in the data counts and the model card.
GENERATION_MARKERS = "generation markers of the chat template"
TRL_TRAINING_TEMPLATE = "TRL's training version of the chat template"
PROMPT_COMPLETION = "prompt-completion (tokens after the generation prompt)"


@dataclass
class Prepared:
    """Tokenised train and eval splits and the counts of every filter, for logs and the model card."""

    train: Any  # datasets.Dataset with input_ids, labels
    eval: Any | None
    stats: dict[str, Any] = field(default_factory=dict)
    dataset_ref: dict[str, Any] = field(default_factory=dict)  # what was trained on: id/path, revision, manifest


def _stable_key(seed: int, *parts: object) -> str:
    return hashlib.sha1(":".join(str(p) for p in (seed, *parts)).encode("utf-8")).hexdigest()


def load_release(cfg: DataConfig) -> tuple[Any, dict[str, Any]]:
    """The release as a memory-mapped `datasets.Dataset` (rows stay on disk), from a local folder (its Parquet files,
    converted once into the `datasets` cache) or a Hub id at `cfg.revision`."""
    import datasets

    path = Path(cfg.dataset).expanduser()
    if path.is_dir() and (path / MANIFEST).is_file():
        files = release_files(path, cfg.split)  # checks every shard's size and sha256 against the manifest
        m = read_manifest(path)
        recipe = m.get("recipe") or {}
        return _from_parquet(files, cfg), {
            "dataset": str(path.resolve()),
            "revision": f"{recipe.get('name')}@{recipe.get('version')} (recipe sha256 {m.get('recipe_sha256')})",
            "files": [f.name for f in files],
            "recipe_name": recipe.get("name"),
            "recipe_version": recipe.get("version"),
            "recipe_sha256": m.get("recipe_sha256"),
        }
    if path.exists():
        files = sorted((path / "data").glob(f"{cfg.split}-*.parquet")) if path.is_dir() else [path]
        if path.is_dir() and not files:
            files = sorted(path.rglob("*.parquet"))
        if not files:
            raise ConfigError(f"{path}: no Parquet files (expected data/{cfg.split}-*.parquet, as medr1-data builds)")
        ref = {"dataset": str(path.resolve()), "revision": None, "files": [f.name for f in files]}
        return _from_parquet(files, cfg), ref
    if cfg.dataset.startswith(("/", "./", "../", "~")) or cfg.dataset.count("/") > 1:
        raise ConfigError(f"data.dataset '{cfg.dataset}': no such file or folder")
    try:
        ds = datasets.load_dataset(cfg.dataset, revision=cfg.revision, split=cfg.split)
    except Exception as e:
        raise ConfigError(
            f"data.dataset '{cfg.dataset}' (revision {cfg.revision}): not a local folder and could not be loaded "
            f"from the Hub: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    ref = {"dataset": cfg.dataset, "revision": cfg.revision or "main (unpinned)"}
    try:  # the commit the revision resolved to, where the Hub can be asked
        from huggingface_hub import HfApi

        ref["commit"] = HfApi().dataset_info(cfg.dataset, revision=cfg.revision).sha
    except Exception:
        pass
    return ds, ref


SELECTION_COLUMNS = ["id", "source", "sample_idx", "is_correct", "quality_score", "contaminated"]
EXAMPLE_COLUMNS = ["question", "options", "answer_label", "context"]


def training_columns(names: list[str], cfg: DataConfig) -> list[str]:
    """The columns of a release with columns `names` that selection and tokenisation read (in the release's order):
    the small ones, and the chat column or the fields the assistant turn is rendered from."""
    wanted = {*SELECTION_COLUMNS, *EXAMPLE_COLUMNS}
    wanted |= {cfg.messages} if cfg.messages in names else set(format_fields(cfg.assistant_format))
    return [n for n in names if n in wanted]


def _from_parquet(files: list[Path], cfg: DataConfig) -> Any:
    """Parquet files as one memory-mapped `datasets.Dataset` of the columns training reads (the Arrow cache file is
    written once, then reused)."""
    import datasets

    try:
        columns = training_columns(pq.read_schema(files[0]).names, cfg)
        return datasets.Dataset.from_parquet([str(f) for f in files], columns=columns)
    except Exception as e:  # files of another tool whose schemas `datasets` cannot join
        raise ConfigError(f"{files[0].parent}: could not read the Parquet files as one table: {e}") from None


def _require(table: pa.Table, column: str, why: str) -> None:
    if column not in table.column_names:
        raise ConfigError(
            f"release has no column '{column}' (needed for {why}); columns: {', '.join(table.column_names)}"
        )


def select_rows(release: pa.Table, cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Filter on the release's own columns, hold out questions by id, then cap per source: (train row positions, eval
    row positions, counts). Only the small columns are read, so a memory-mapped release stays on disk."""
    counts: dict[str, int] = {"rows_read": release.num_rows}
    for col in ("id", "question", "options", "answer_label"):
        _require(release, col, "every example")
    table = release.select([c for c in SELECTION_COLUMNS if c in release.column_names])
    table = table.append_column("_row", pa.array(np.arange(release.num_rows, dtype=np.int64)))

    def keep(mask: pa.ChunkedArray | pa.Array, reason: str) -> None:
        nonlocal table
        mask = pc.fill_null(mask, False)
        counts[f"dropped_{reason}"] = table.num_rows - pc.sum(mask).as_py() if table.num_rows else 0
        table = table.filter(mask)

    if cfg.require_correct:
        _require(table, "is_correct", "data.require_correct")
        keep(table["is_correct"], "not_correct")
    if cfg.min_quality > 0:
        _require(table, "quality_score", "data.min_quality")
        keep(pc.greater_equal(table["quality_score"], cfg.min_quality), "low_quality")
    if cfg.drop_contaminated and "contaminated" in table.column_names:
        keep(pc.invert(pc.fill_null(table["contaminated"], False)), "contaminated")
    if cfg.sources is not None or cfg.max_per_source:
        _require(table, "source", "data.sources / data.max_per_source")
    if cfg.sources is not None:
        keep(pc.is_in(table["source"], pa.array(cfg.sources, pa.string())), "source_not_selected")

    # Held out by question id, so no sample of an eval question is trained on.
    ids = sorted(set(table["id"].to_pylist()), key=lambda q: _stable_key(seed, "eval", q))
    n_eval = round(len(ids) * cfg.eval_fraction)
    if cfg.eval_fraction > 0 and n_eval == 0 and len(ids) > 1:
        n_eval = 1
    eval_ids = pa.array(ids[:n_eval], pa.string())
    in_eval = pc.is_in(table["id"], eval_ids)
    eval_table, table = table.filter(in_eval), table.filter(pc.invert(in_eval))
    counts["eval_questions"] = n_eval

    sample_idx = table["sample_idx"].to_pylist() if "sample_idx" in table.column_names else [0] * table.num_rows
    ids_col = table["id"].to_pylist()
    order = sorted(range(table.num_rows), key=lambda i: _stable_key(seed, "row", ids_col[i], sample_idx[i]))
    per_question: dict[str, int] = {}
    per_source: dict[str, int] = {}
    sources = table["source"].to_pylist() if "source" in table.column_names else [None] * table.num_rows
    chosen: list[int] = []
    capped_q = capped_s = 0
    for i in order:
        q, s = ids_col[i], sources[i]
        if cfg.max_samples_per_question is not None and per_question.get(q, 0) >= cfg.max_samples_per_question:
            capped_q += 1
            continue
        if s in cfg.max_per_source and per_source.get(s, 0) >= cfg.max_per_source[s]:
            capped_s += 1
            continue
        per_question[q] = per_question.get(q, 0) + 1
        per_source[s] = per_source.get(s, 0) + 1
        chosen.append(i)
    counts["dropped_samples_per_question_cap"] = capped_q
    counts["dropped_source_cap"] = capped_s
    if cfg.max_rows is not None and len(chosen) > cfg.max_rows:
        counts["dropped_max_rows"] = len(chosen) - cfg.max_rows
        chosen = chosen[: cfg.max_rows]
    train_rows = np.sort(table["_row"].to_numpy()[np.asarray(chosen, dtype=np.int64)])
    counts["train_rows_selected"] = len(train_rows)
    counts["eval_rows_selected"] = eval_table.num_rows
    return train_rows, eval_table["_row"].to_numpy(), counts


def format_fields(fmt: str) -> list[str]:
    """The `{field}` names an assistant format uses."""
    return [name for _, name, _, _ in string.Formatter().parse(fmt) if name]


def inline_thinking(message: dict[str, Any]) -> dict[str, str]:
    """A turn of a release chat column as plain role and content: an assistant's `reasoning_content` goes inline."""
    content = message["content"]
    if message["role"] == "assistant" and "reasoning_content" in message:
        content = THINK_INLINE_FORMAT.format(reasoning=message["reasoning_content"] or "", content=content)
    return {"role": message["role"], "content": content}


def uses_column(table: Any, cfg: DataConfig) -> bool:
    """Whether the conversations are read from the release's `cfg.messages` column (else rendered)."""
    return cfg.messages is not None and cfg.messages in table.column_names


def to_messages(row: dict[str, Any], cfg: DataConfig) -> list[dict[str, str]]:
    """The release's `cfg.messages` chat (thinking inline) or, without one, system and user turns from the eval
    prompt template, then the assistant turn in `cfg.assistant_format`."""
    if cfg.messages is not None and row.get(cfg.messages) is not None:
        return [inline_thinking(m) for m in row[cfg.messages]]
    template = get_template(cfg.template)
    messages = template.messages(row["question"], row["options"], row.get("context"))
    values = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
    try:
        assistant = cfg.assistant_format.format(**values)
    except (KeyError, IndexError) as e:
        raise ConfigError(f"data.assistant_format: field {e} is not a column of the release") from None
    return [*messages, {"role": "assistant", "content": assistant}]


def loss_mask(tokenizer: Any) -> tuple[str, str | None]:
    """How the assistant's tokens are found, and the chat template to tokenise with (None: the tokenizer's own)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not tokenizer.chat_template:
        raise ConfigError("the student's tokenizer has no chat template; give one as model.chat_template in the recipe")
    if has_generation_markers(tokenizer.chat_template):
        return GENERATION_MARKERS, None
    try:
        return TRL_TRAINING_TEMPLATE, get_training_chat_template(tokenizer)
    except ValueError:  # TRL has no training version of this template
        return PROMPT_COMPLETION, None


def completion_masks(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> tuple[list, list]:
    """(token ids, mask of the last turn) of each conversation: what follows its prompt rendered with the generation
    prompt, as TRL's prompt–completion format splits it; a template that renders that prompt differently is refused."""
    from trl.data_utils import common_prefix_length

    if any(c[-1]["role"] != "assistant" for c in conversations):
        raise ConfigError("a conversation does not end with an assistant turn; nothing to train on")
    prompts = tokenizer.apply_chat_template(
        [c[:-1] for c in conversations], tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    full = tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True)["input_ids"]
    masks = []
    for prompt, ids in zip(prompts, full, strict=True):
        n = common_prefix_length(prompt, ids)
        if n < len(prompt):
            raise ConfigError(
                f"the chat template renders the prompt with its generation prompt differently from the start of the "
                f"whole conversation ({tokenizer.decode(prompt[n:])!r} is not followed by the answer); give a "
                "template that does, or one with {% generation %} markers, as model.chat_template in the recipe"
            )
        masks.append([0] * n + [1] * (len(ids) - n))
    return full, masks


def tokenize_rows(rows: list[dict[str, Any]], tokenizer: Any, cfg: DataConfig, mask: tuple[str, str | None]) -> dict:
    """input_ids, labels (-100 outside the assistant turn), length and n_labels for a batch of release rows."""
    conversations = [to_messages(r, cfg) for r in rows]
    how, chat_template = mask
    if how == PROMPT_COMPLETION:
        input_ids, masks = completion_masks(tokenizer, conversations)
    else:
        out = tokenizer.apply_chat_template(
            conversations,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            chat_template=chat_template,
        )
        input_ids, masks = out["input_ids"], out["assistant_masks"]
    labels, n_labels = [], []
    for ids, m in zip(input_ids, masks, strict=True):
        if 1 not in m:
            raise ConfigError(f"no assistant tokens found ({how}); check the chat template")
        labels.append([t if keep else IGNORE_INDEX for t, keep in zip(ids, m, strict=True)])
        n_labels.append(sum(m))
    lengths = [len(i) for i in input_ids]
    return {"input_ids": input_ids, "labels": labels, "length": lengths, "n_labels": n_labels}


def tokenize_table(
    ds: Any, tokenizer: Any, cfg: DataConfig, mask: tuple[str, str | None], num_proc: int | None = None
) -> tuple[Any, int]:
    """Tokenise a `datasets.Dataset` of release rows (written to its cache a batch at a time, so memory holds one
    batch); rows over `cfg.max_length` are dropped: (dataset, n_dropped)."""
    import datasets

    if uses_column(ds, cfg):
        needed = {"id", cfg.messages}
    else:
        needed = {"id", "question", "options", "context", *format_fields(cfg.assistant_format)}
        missing = sorted(needed - set(ds.column_names) - {"context"})
        if missing:
            raise ConfigError(f"data.assistant_format: field '{missing[0]}' is not a column of the release")
    ds = ds.select_columns([c for c in ds.column_names if c in needed])

    def _map(batch: dict[str, list]) -> dict:
        rows = [dict(zip(batch, vals, strict=True)) for vals in zip(*batch.values(), strict=True)]
        return tokenize_rows(rows, tokenizer, cfg, mask)

    tokens = datasets.Sequence(datasets.Value("int32"))  # half the bytes of the int64 `datasets` would infer
    features = datasets.Features(
        input_ids=tokens, labels=tokens, length=datasets.Value("int32"), n_labels=datasets.Value("int32")
    )
    ds = ds.map(
        _map, batched=True, batch_size=256, remove_columns=ds.column_names, num_proc=num_proc, features=features
    )
    n = len(ds)
    ds = ds.filter(lambda n_tok: n_tok <= cfg.max_length, input_columns="length", num_proc=num_proc)
    return ds, n - len(ds)


def prepare(cfg: DataConfig, tokenizer: Any, seed: int = 42) -> Prepared:
    """Load (memory-mapped), filter, split and tokenise the release described by `cfg`."""
    release, ref = load_release(cfg)
    train_rows, eval_rows, counts = select_rows(release.data.table, cfg, seed)
    if not len(train_rows):
        raise ConfigError(f"{ref['dataset']}: no training rows left after filtering ({_fmt(counts)})")
    mask = loss_mask(tokenizer)
    train, too_long = tokenize_table(release.select(train_rows), tokenizer, cfg, mask, cfg.num_proc)
    counts["dropped_too_long_train"] = too_long
    ev = None
    if len(eval_rows):
        ev, too_long_eval = tokenize_table(release.select(eval_rows), tokenizer, cfg, mask, cfg.num_proc)
        counts["dropped_too_long_eval"] = too_long_eval
        ev = ev if len(ev) else None
    if len(train) == 0:
        raise ConfigError(
            f"every training row is longer than data.max_length={cfg.max_length} tokens ({too_long} dropped)"
        )
    counts["train_examples"] = len(train)
    counts["eval_examples"] = len(ev) if ev is not None else 0
    counts["train_tokens"] = int(sum(train["length"]))
    counts["train_assistant_tokens"] = int(sum(train["n_labels"]))
    counts["conversations"] = (
        f"release column {cfg.messages}"
        if uses_column(release, cfg)
        else f"rendered ({cfg.template}, data.assistant_format)"
    )
    counts["loss_on"] = mask[0]
    return Prepared(train=train, eval=ev, stats=counts, dataset_ref=ref)


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v)
