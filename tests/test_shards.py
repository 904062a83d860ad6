"""Release shards: one source per shard, byte-sized shards and row groups, manifest, checked reading, load_dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from medr1_data import Medr1Error
from medr1_data.build import run
from medr1_data.prompts import SYSTEM_PROMPT, get_template
from medr1_data.recipe import load_recipe
from medr1_data.schema import CHAT_FIELDS
from medr1_data.shards import (
    MANIFEST,
    ShardSettings,
    chat_columns,
    check_release,
    read_release,
    sha256_file,
    sort_order,
    take_rows,
    write_manifest,
    write_shards,
)


def rows_table(n_per_source: dict[str, int], text_chars: int = 2000) -> pa.Table:
    """Trace-like rows of several sources, shuffled, with `text_chars` of reasoning each."""
    ids, sources, samples, texts = [], [], [], []
    for source, n in n_per_source.items():
        for i in range(n):
            for s in (1, 0):
                ids.append(f"{source}/train/{i:04d}")
                sources.append(source)
                samples.append(s)
                texts.append((f"{source} {i} {s} " * text_chars)[:text_chars])
    order = sorted(range(len(ids)), key=lambda k: (hash(ids[k]) % 97, k))  # not in release order
    return pa.table(
        {
            "id": [ids[k] for k in order],
            "source": [sources[k] for k in order],
            "sample_idx": pa.array([samples[k] for k in order], pa.int32()),
            "reasoning": [texts[k] for k in order],
        }
    )


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[dict], pa.Table]:
    table = rows_table({"medqa": 60, "medmcqa": 90, "pubmedqa": 20})
    settings = ShardSettings(shard_bytes=100_000, row_group_bytes=40_000)
    out = tmp_path / "release"
    files = write_shards(table, out, settings)
    write_manifest(out, files, pq.read_schema(out / files[0]["path"]), {"name": "t", "version": "1.2.3"}, "0")
    return out, files, table


def test_shards_hold_one_source_each_in_release_order(written) -> None:
    out, files, table = written
    n = len(files)
    assert [f["path"] for f in files] == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert [f["config"] for f in files] == sorted(f["config"] for f in files)  # sources in id order
    for f in files:
        shard = pq.read_table(out / f["path"])
        assert set(shard["source"].to_pylist()) == {f["config"]}
        assert shard.num_rows == f["rows"] and (out / f["path"]).stat().st_size == f["bytes"]
        assert f["arrow_bytes"] <= 100_000 * 1.1  # about the byte target (rows are not split)
        assert f["sha256"] == sha256_file(out / f["path"])
        meta = pq.ParquetFile(out / f["path"]).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert sum(groups) == shard.num_rows and all(shard.slice(0, n).nbytes <= 40_000 * 1.2 for n in groups[:-1])
    assert sum(f["config"] == "medmcqa" for f in files) > 1  # a big source gets several shards
    back = read_release(out)
    keys = list(zip(back["id"].to_pylist(), back["sample_idx"].to_pylist(), strict=True))
    assert keys == sorted(keys) and back.num_rows == table.num_rows


def test_writes_are_deterministic(tmp_path: Path) -> None:
    table = rows_table({"medqa": 30, "headqa": 30})
    a = write_shards(table, tmp_path / "a", ShardSettings(shard_bytes=50_000))
    b = write_shards(
        table.slice(0).sort_by([("reasoning", "descending")]), tmp_path / "b", ShardSettings(shard_bytes=50_000)
    )
    assert [(f["path"], f["sha256"]) for f in a] == [(f["path"], f["sha256"]) for f in b]


def rechunked(table: pa.Table, rows_per_chunk: int) -> pa.Table:
    """The same rows in chunks of `rows_per_chunk` (as a table read back from a checkpoint may be)."""
    return pa.Table.from_batches(table.to_batches(max_chunksize=rows_per_chunk), schema=table.schema)


def with_nulls(table: pa.Table) -> pa.Table:
    """`table` plus a text column null in every third row and a struct whose list of flags is null in every fifth."""
    notes = [None if i % 3 == 0 else f"note {i}" for i in range(table.num_rows)]
    quality = [{"score": i / 7, "flags": None if i % 5 == 0 else ["short"] * (i % 3)} for i in range(table.num_rows)]
    return table.append_column("note", pa.array(notes, pa.string())).append_column("quality", pa.array(quality))


def test_take_rows_is_take_in_one_chunk_whatever_the_input_chunks() -> None:
    table = with_nulls(rows_table({"medqa": 20, "medmcqa": 30}, text_chars=50))
    rows = pa.array([57, 3, 3, 99, 0, 41, 12, 98, 64, 5], pa.uint64())
    expected = table.take(rows)
    results = [take_rows(t, rows) for t in (table, rechunked(table, 7), rechunked(table, 1))]
    for got in results:
        assert got.equals(expected)
        assert all(column.num_chunks == 1 for column in got.columns)
        assert got.nbytes == results[0].nbytes
    assert take_rows(table, pa.array([], pa.uint64())).num_rows == 0
    chunked = rechunked(table, 9)
    expected = table.sort_by([("id", "ascending"), ("sample_idx", "ascending")])
    assert take_rows(chunked, sort_order(chunked)).equals(expected)


def test_shards_of_chosen_rows_do_not_depend_on_chunking(tmp_path: Path) -> None:
    table = with_nulls(rows_table({"medqa": 40, "medmcqa": 60}))
    keep = pa.array([i % 4 != 1 for i in range(table.num_rows)])
    settings = ShardSettings(shard_bytes=60_000, row_group_bytes=30_000)
    expected = write_shards(table.filter(keep), tmp_path / "filtered", settings)
    rows = pc.indices_nonzero(keep)
    for name, t in (("whole", table), ("chunks-7", rechunked(table, 7)), ("chunks-1", rechunked(table, 1))):
        got = write_shards(t, tmp_path / name, settings, rows=rows)
        assert got == expected, name
    assert len(expected) > 2


def test_manifest_configs_and_reading_each_config(written) -> None:
    out, files, _ = written
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["version"] == "1.2.3" and manifest["library"]["name"] == "medr1"
    assert list(manifest["configs"]) == ["default", "medmcqa", "medqa", "pubmedqa"]
    assert manifest["configs"]["default"]["splits"]["train"]["rows"] == 340
    for name, rows in (("medqa", 120), ("medmcqa", 180), ("pubmedqa", 40)):
        config = manifest["configs"][name]
        assert config["splits"]["train"]["rows"] == rows
        assert config["files"] == [f["path"] for f in files if f["config"] == name]
        table = read_release(out, config=name)
        assert table.num_rows == rows and set(table["source"].to_pylist()) == {name}
    with pytest.raises(Medr1Error, match="no files for config 'nosuch'"):
        read_release(out, config="nosuch")


def test_reading_checks_every_file(written, tmp_path: Path) -> None:
    out, files, _ = written
    assert check_release(out)["files"] == files
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / files[1]["path"]).unlink()
    with pytest.raises(Medr1Error, match="listed in the manifest but missing"):
        read_release(copy)
    shutil.copy(out / files[1]["path"], copy / files[1]["path"])
    shutil.copy(out / files[0]["path"], copy / "data" / "train-00099-of-00100.parquet")
    with pytest.raises(Medr1Error, match="in data/ but not in the manifest"):
        check_release(copy)
    (copy / "data" / "train-00099-of-00100.parquet").unlink()
    data = bytearray((copy / files[2]["path"]).read_bytes())
    data[200] ^= 0xFF
    (copy / files[2]["path"]).write_bytes(bytes(data))
    with pytest.raises(Medr1Error, match="checksum does not match"):
        read_release(copy, config=files[2]["config"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(Medr1Error, match="no manifest"):
        read_release(tmp_path / "empty")


def test_load_dataset_reads_every_config_of_a_built_release(tmp_path: Path) -> None:
    import datasets

    b = run(load_recipe("demo", ["output.shard_bytes=12000"]), tmp_path / "out", quiet=True)
    manifest = json.loads((b.out / MANIFEST).read_text())
    assert len(manifest["files"]) > len(manifest["configs"]) - 1  # some source has several shards
    for name, config in manifest["configs"].items():
        ds = datasets.load_dataset(str(b.out), name, split="train")
        assert ds.num_rows == config["splits"]["train"]["rows"]
        expected = read_release(b.out, config=name)
        assert ds["id"] == expected["id"].to_pylist()  # same rows, same order
        if name != "default":
            assert set(ds["source"]) == {name}
    assert (
        sum(c["splits"]["train"]["rows"] for n, c in manifest["configs"].items() if n != "default") == b.stats["rows"]
    )


def test_chat_columns_hold_each_row_as_one_conversation() -> None:
    table = pa.table(
        {
            "question": ["  Which nerve?  ", "Is early mobilisation better?"],
            "options": [
                [{"label": "A", "text": "ulnar"}, {"label": "B", "text": "median"}],
                [{"label": "A", "text": "yes"}, {"label": "B", "text": "no"}],
            ],
            "context": [None, "An abstract."],
            "answer_label": ["B", "A"],
            "reasoning": ["\n The carpal tunnel. \n", None],
        }
    )
    chat = chat_columns(rechunked(table, 1), get_template("medr1-mcq-v1"))
    assert chat.schema == pa.schema(CHAT_FIELDS)
    system = {"role": "system", "content": SYSTEM_PROMPT}
    users = [
        {"role": "user", "content": "Question: Which nerve?\n\nOptions:\nA. ulnar\nB. median"},
        {
            "role": "user",
            "content": "Context:\nAn abstract.\n\nQuestion: Is early mobilisation better?\n\nOptions:\nA. yes\nB. no",
        },
    ]
    assert chat["messages"].to_pylist() == [
        [
            {**system, "reasoning_content": None},
            {**users[0], "reasoning_content": None},
            {"role": "assistant", "content": "<answer>B</answer>", "reasoning_content": "The carpal tunnel."},
        ],
        [
            {**system, "reasoning_content": None},
            {**users[1], "reasoning_content": None},
            {"role": "assistant", "content": "<answer>A</answer>", "reasoning_content": None},
        ],
    ]
    assert chat["messages_think_inline"].to_pylist() == [
        [system, users[0], {"role": "assistant", "content": "<think>The carpal tunnel.</think>\n<answer>B</answer>"}],
        [system, users[1], {"role": "assistant", "content": "<think></think>\n<answer>A</answer>"}],
    ]
    assert chat_columns(table.slice(0, 0), get_template("medr1-mcq-v1")).num_rows == 0


def test_derived_columns_are_built_per_shard_and_counted_in_its_size(tmp_path: Path) -> None:
    table = rows_table({"medqa": 40, "medmcqa": 60})
    settings = ShardSettings(shard_bytes=80_000)

    def derive(t: pa.Table) -> pa.Table:
        return pa.table({"reasoning_again": t["reasoning"]})

    plain = write_shards(table, tmp_path / "plain", settings)
    derived = write_shards(table, tmp_path / "derived", settings, derive=derive)
    assert len(derived) > 1.5 * len(plain)  # the added column doubles the bytes: about twice as many shards
    for f in derived:
        shard = pq.read_table(tmp_path / "derived" / f["path"])
        assert shard["reasoning_again"].equals(shard["reasoning"])
        assert shard.column_names[-1] == "reasoning_again" and f["arrow_bytes"] <= 80_000 * 1.1
    again = write_shards(table, tmp_path / "again", settings, derive=derive)
    assert [f["sha256"] for f in again] == [f["sha256"] for f in derived]
