"""The Source contract and the loader that turns any source's rows into the canonical table plus rejects."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import orjson
import polars as pl
import pyarrow as pa

from medr1_data import Medr1Error
from medr1_data.schema import QUESTION_SCHEMA, REJECT_SCHEMA
from medr1_data.sources.readers import RowError

LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
RAW_CHARS = 500


class Question(NamedTuple):
    """One source row in canonical form, before the table-wide checks."""

    source_id: str
    question: str
    options: list[tuple[str, str]]
    answer_label: str
    context: str | None = None
    meta: dict[str, Any] | None = None


class SourceRow(NamedTuple):
    """A row as a source file or Hub dataset gave it, with where it came from."""

    file: str
    row: int
    raw: dict[str, Any] | RowError
    text: str | None = None


@dataclass
class Loaded:
    """The canonical questions of one source split and the rows rejected on the way, with reasons."""

    table: pa.Table
    rejects: pa.Table = field(default_factory=REJECT_SCHEMA.empty_table)

    def reject_counts(self) -> dict[str, int]:
        """Rejected rows per reason, most frequent first."""
        if not self.rejects.num_rows:
            return {}
        counts = pl.from_arrow(self.rejects.select(["reason"])).group_by("reason").len()
        return dict(counts.sort(["len", "reason"], descending=[True, False]).iter_rows())


def content_id(question: str, options: list[tuple[str, str]]) -> str:
    """A stable id for rows whose source has none: `h` + 16 hex digits of SHA-1 over stem and option texts."""
    text = "\x1f".join([question.strip(), *(t.strip() for _, t in options)])
    return "h" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def options_from_mapping(raw: dict[str, Any], field: str) -> list[tuple[str, str]]:
    """Options given as {label: text} (or a list of texts), checked for types, labels kept in source order."""
    value = raw.get(field)
    if value is None:
        raise RowError("missing_field", field)
    if isinstance(value, list):
        value = dict(zip(LABELS, value, strict=False))
    if not isinstance(value, dict):
        raise RowError("wrong_type", field, f"expected an object of label: text, got {type(value).__name__}")
    out = []
    for label, text in value.items():
        if text is None:  # Hub structs fill absent labels (a 4-option row in a 5-option table) with null
            continue
        if not isinstance(text, str):
            raise RowError("wrong_type", f"{field}.{label}", f"expected a string, got {type(text).__name__}")
        out.append((str(label).strip(), text))
    return out


class Source:
    """A medical QA source: where it lives (native files, Hub id) and how one row becomes a Question."""

    name: ClassVar[str]
    license: ClassVar[str]
    homepage: ClassVar[str]
    hub_id: ClassVar[str | None] = None
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    description: ClassVar[str] = ""
    # Sources with known, kept duplicate option texts (MedMCQA) flag them in meta instead of rejecting.
    allow_duplicate_options: ClassVar[bool] = False

    def local_rows(self, path: Path, split: str) -> Iterator[SourceRow]:
        """Rows of a local file or folder in the source's native format."""
        raise NotImplementedError

    def hub_dataset(self, split: str) -> Any:
        """The split as a `datasets.Dataset` from the Hub."""
        import datasets

        if not self.hub_id:
            raise Medr1Error(f"source '{self.name}' has no Hub dataset: give a local path as {self.name}=PATH")
        return datasets.load_dataset(self.hub_id, split=split)

    def hub_rows(self, dataset: Any, split: str, file: str) -> Iterator[SourceRow]:
        """Rows of a `datasets.Dataset` with the Hub copy's columns."""
        for i, row in enumerate(dataset, start=1):
            yield SourceRow(file, i, row)

    def convert(self, raw: dict[str, Any], split: str, *, hub: bool) -> Question:
        """One native (or Hub) row as a Question; raise RowError naming the field when it cannot be."""
        raise NotImplementedError

    def rows(self, split: str, path: Path | None) -> tuple[Iterator[SourceRow], bool]:
        """The rows to read, and whether they have the Hub's columns (Hub, or local Parquet shards of it)."""
        if path is None:
            try:
                dataset = self.hub_dataset(split)
            except Medr1Error:
                raise
            except Exception as e:  # datasets raises many types (offline, gated, missing split)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise Medr1Error(f"hf://datasets/{self.hub_id} ({split}): cannot load from the Hub: {first}") from None
            return self.hub_rows(dataset, split, f"hf://datasets/{self.hub_id}"), True
        path = Path(path)
        if not path.exists():
            raise Medr1Error(f"{path}: no such file or folder")
        shards = sorted(path.glob("*.parquet")) if path.is_dir() else [path] if path.suffix == ".parquet" else []
        if shards:
            return self.hub_rows(_parquet_dataset(shards), split, str(path)), True
        return self.local_rows(path, split), False


def _parquet_dataset(shards: list[Path]) -> Any:
    import datasets

    try:
        return datasets.load_dataset("parquet", data_files=[str(s) for s in shards], split="train")
    except Exception as e:  # datasets raises many types for unreadable Parquet
        raise Medr1Error(f"{shards[0]}: cannot read as Parquet: {e}") from None


def _raw_text(raw: Any, text: str | None) -> str:
    if text is None:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    return text[:RAW_CHARS]


class _Rows:
    """Converted questions gathered as Python lists and turned into Arrow every `CHUNK_ROWS` rows, so that the Python
    objects alive at any time are one chunk's, however large the source."""

    CHUNK_ROWS = 65_536

    def __init__(self, source: Source, split: str) -> None:
        self.source, self.split = source, split
        self.pieces: list[pa.Table] = []
        self._reset()

    def _reset(self) -> None:
        self.cols: dict[str, list[Any]] = {k: [] for k in ("source_id", "question", "answer_label", "context", "meta")}
        self.where: dict[str, list[Any]] = {"_file": [], "_row": []}
        self.labels: list[str] = []
        self.texts: list[str] = []
        self.offsets = [0]

    def add(self, q: Question, file: str, row: int) -> None:
        """One converted question, from row `row` of `file`."""
        self.cols["source_id"].append(q.source_id)
        self.cols["question"].append(q.question)
        self.cols["answer_label"].append(q.answer_label)
        self.cols["context"].append(q.context)
        self.cols["meta"].append(orjson.dumps(q.meta or {}, option=orjson.OPT_SORT_KEYS, default=str).decode())
        for lab, t in q.options:
            self.labels.append(lab)
            self.texts.append(t)
        self.offsets.append(len(self.labels))
        self.where["_file"].append(file)
        self.where["_row"].append(row)
        if len(self.offsets) > self.CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        cols, n, name, split = self.cols, len(self.offsets) - 1, self.source.name, self.split
        options = pa.ListArray.from_arrays(
            pa.array(self.offsets, pa.int32()),
            pa.StructArray.from_arrays(
                [pa.array(self.labels, pa.string()), pa.array(self.texts, pa.string())], ["label", "text"]
            ),
        ).cast(QUESTION_SCHEMA.field("options").type)
        piece = {
            "id": pa.array([f"{name}/{split}/{s}" for s in cols["source_id"]], pa.string()),
            "source": pa.array([name] * n, pa.string()),
            "source_split": pa.array([split] * n, pa.string()),
            "source_id": pa.array(cols["source_id"], pa.string()),
            "question": pa.array(cols["question"], pa.string()),
            "options": options,
            "answer_label": pa.array(cols["answer_label"], pa.string()),
            "context": pa.array(cols["context"], pa.string()),
            "meta": pa.array(cols["meta"], pa.string()),
            "license": pa.array([self.source.license] * n, pa.string()),
            "_file": pa.array(self.where["_file"], pa.string()),
            "_row": pa.array(self.where["_row"], pa.int64()),
        }
        self.pieces.append(pa.table(piece))
        self._reset()

    def tables(self) -> list[pa.Table]:
        """Every row added, as consecutive tables of `CHUNK_ROWS` rows (at least one, maybe empty)."""
        if len(self.offsets) > 1 or not self.pieces:
            self._flush()
        pieces, self.pieces = self.pieces, []
        return pieces


def load_rows(source: Source, split: str, path: Path | None = None, *, keep_duplicate_options: bool = False) -> Loaded:
    """Read one split of `source` (Hub when path is None) into the canonical table and a rejects table.

    `keep_duplicate_options` keeps rows whose options repeat a text (benchmarks: every test item must be indexed).
    """
    rows, hub = source.rows(split, path)
    converted = _Rows(source, split)
    rejects: dict[str, list[Any]] = {f.name: [] for f in REJECT_SCHEMA}

    def reject(file: str, row: int, err: RowError, raw: str) -> None:
        values = (source.name, split, file, row, err.field, err.reason, err.detail, raw)
        for k, v in zip(REJECT_SCHEMA.names, values, strict=True):
            rejects[k].append(v)

    for file, row, raw, text in rows:
        if isinstance(raw, RowError):
            reject(file, row, raw, text or "")
            continue
        try:
            q = source.convert(raw, split, hub=hub)
        except RowError as err:
            reject(file, row, err, _raw_text(raw, text))
            continue
        converted.add(q, file, row)
    allow = keep_duplicate_options or source.allow_duplicate_options
    kept, checked_rejects = check_rows(converted.tables(), allow_duplicate_options=allow)
    all_rejects = pa.concat_tables([pa.table(rejects, schema=REJECT_SCHEMA), checked_rejects])
    if kept.num_rows == 0 and all_rejects.num_rows:
        first = all_rejects.slice(0, 1).to_pylist()[0]
        raise Medr1Error(
            f"{first['file']}: no row could be read as '{source.name}' {split}; "
            f"row {first['row']}, field '{first['field'] or '-'}': {first['reason']} {first['detail'] or ''}".rstrip()
        )
    return Loaded(kept.select(QUESTION_SCHEMA.names).cast(QUESTION_SCHEMA), all_rejects)


def check_rows(pieces: list[pa.Table], *, allow_duplicate_options: bool = False) -> tuple[pa.Table, pa.Table]:
    """Table-wide checks as polars expressions: split canonical rows (the consecutive `pieces` of one table, taken
    out of the list as they are checked) into kept rows and rejects with reasons.

    Only the duplicate-id check reads a whole column; the others run a piece at a time, so their intermediate lists
    stay the size of a piece and each piece is freed once its kept rows are copied out."""
    ids = pa.chunked_array([c for piece in pieces for c in piece.column("id").chunks], pa.string())
    later = (~pl.from_arrow(ids).is_first_distinct()).to_arrow()
    kept, rejects, start = [], [], 0
    pieces.reverse()  # taken off the end, in table order
    while pieces:
        piece = pieces.pop()
        piece = piece.append_column("_dup_id", later.slice(start, piece.num_rows))
        start += piece.num_rows
        k, r = _check_chunk(piece, allow_duplicate_options)
        kept.append(k)
        rejects.append(r)
        del piece
    return pa.concat_tables(kept), pa.concat_tables(rejects)


def _check_chunk(table: pa.Table, allow_duplicate_options: bool) -> tuple[pa.Table, pa.Table]:
    """`check_rows` on a slice whose `_dup_id` column already says which ids were seen before."""
    df = pl.from_arrow(table)
    texts = pl.col("options").list.eval(pl.element().struct.field("text").str.strip_chars().str.to_lowercase())
    labels = pl.col("options").list.eval(pl.element().struct.field("label"))
    n_opts = pl.col("options").list.len()
    duplicate_texts = texts.list.n_unique() < n_opts
    later_duplicate_id = pl.col("_dup_id")
    reason = (
        pl.when(pl.col("question").str.strip_chars() == "")
        .then(pl.lit("empty_question"))
        .when(n_opts == 0)
        .then(pl.lit("no_options"))
        .when(n_opts == 1)
        .then(pl.lit("single_option"))
        .when(texts.list.eval(pl.element() == "").list.any())
        .then(pl.lit("empty_option"))
        .when(labels.list.n_unique() < n_opts)
        .then(pl.lit("duplicate_labels"))
        .when(~labels.list.contains(pl.col("answer_label")))
        .then(pl.lit("answer_not_in_options"))
        .when(duplicate_texts & pl.lit(not allow_duplicate_options))
        .then(pl.lit("duplicate_options"))
        .when(later_duplicate_id)
        .then(pl.lit("duplicate_id"))
        .otherwise(pl.lit(None, pl.String))
    )
    field = (
        pl.when(pl.col("_reason").is_in(["empty_question"]))
        .then(pl.lit("question"))
        .when(pl.col("_reason") == "answer_not_in_options")
        .then(pl.lit("answer"))
        .when(pl.col("_reason") == "duplicate_id")
        .then(pl.lit("id"))
        .otherwise(pl.lit("options"))
    )
    df = df.with_columns(reason.alias("_reason"))
    bad = df.filter(pl.col("_reason").is_not_null())
    rejects = bad.select(
        pl.col("source"),
        pl.col("source_split"),
        pl.col("_file").alias("file"),
        pl.col("_row").alias("row"),
        field.alias("field"),
        pl.col("_reason").alias("reason"),
        pl.when(pl.col("_reason") == "answer_not_in_options")
        .then(pl.format("answer '{}' not among {}", pl.col("answer_label"), labels.list.join(",")))
        .when(pl.col("_reason") == "duplicate_id")
        .then(pl.format("id {} seen before", pl.col("id")))
        .otherwise(pl.lit(None, pl.String))
        .alias("detail"),
        pl.col("question").str.slice(0, RAW_CHARS).alias("raw"),
    )
    kept = df.filter(pl.col("_reason").is_null()).drop("_reason", "_dup_id")
    return kept.to_arrow(), rejects.to_arrow().cast(REJECT_SCHEMA)
