"""The offline demo build end to end: Hub layout, card, manifest, summary, reproducibility, no network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from medr1_data import Medr1Error
from medr1_data.build import run, summary_rows
from medr1_data.recipe import load_recipe
from medr1_data.schema import QUESTION_SCHEMA, TRACE_FIELDS, VERIFY_FIELDS
from medr1_data.shards import MANIFEST, read_release, sha256_file


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """One demo build shared by the tests of this module, with network access refused throughout."""
    out = tmp_path_factory.mktemp("demo") / "medr1-reasoning"
    real_connect = socket.socket.connect

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"the demo build tried to connect to {address}")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        build = run(load_recipe("demo"), out, quiet=True)
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
    return build


def test_load_dataset_opens_the_folder_like_the_hub(demo) -> None:
    import datasets

    ds = datasets.load_dataset(str(demo.out))
    assert list(ds) == ["train"]
    train = ds["train"]
    expected = [
        *QUESTION_SCHEMA.names,
        *(f.name for f in TRACE_FIELDS if f.name != "error"),
        "contaminated",
        "dup_cluster",
        *(f.name for f in VERIFY_FIELDS),
        "quality",
        "quality_score",
        "messages",
        "messages_think_inline",
    ]
    assert train.column_names == expected
    assert train.num_rows == demo.stats["rows"] == 25
    assert not any(train["contaminated"])
    assert all(train["is_correct"])
    assert len(set(train["id"])) == train.num_rows  # keep=best: one trace per question
    assert train["id"] == sorted(train["id"])


def shard_paths(out: Path) -> list[str]:
    """The release's shard files as the manifest lists them."""
    return [f["path"] for f in json.loads((out / MANIFEST).read_text())["files"]]


def test_hub_layout_files(demo) -> None:
    files = sorted(p.relative_to(demo.out).as_posix() for p in demo.out.rglob("*") if p.is_file())
    shards = shard_paths(demo.out)
    n = len(shards)
    assert shards == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert {"README.md", MANIFEST, *shards} <= set(files)
    assert not [f for f in files if f.startswith("data/") and f not in shards]
    meta = pq.ParquetFile(demo.out / shards[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_summary_counts_every_row(demo) -> None:
    rows = dict(summary_rows(demo))
    assert rows["source rows read"] == 30
    assert rows["  rejected at ingest: no_options"] == 1
    assert rows["  rejected at ingest: answer_not_in_options"] == 1
    assert rows["questions"] == 28 and rows["teacher traces"] == 54
    assert rows["  not sent to the teacher: contaminated"] == 1
    dropped = {k: v for k, v in rows.items() if k.startswith("  dropped")}
    assert dropped == {
        "  dropped: extra_sample": 21,
        "  dropped: quality_repetition": 1,
        "  dropped: truncated": 2,
        "  dropped: wrong_answer": 5,
    }
    assert rows["traces kept"] + sum(dropped.values()) == rows["teacher traces"]
    assert rows["traces kept"] == 25
    assert rows["questions kept"] + rows["questions with no kept trace"] == rows["questions"]
    build_dir = demo.build_dir
    assert pq.read_table(build_dir / "dropped.parquet").num_rows == sum(dropped.values()) + 1
    assert pq.read_table(build_dir / "rejects.parquet").num_rows == 2
    assert pq.read_table(build_dir / "unanswered.parquet").num_rows == 3
    decontam = json.loads((build_dir / "decontam_report.json").read_text())
    assert decontam["benchmarks"]["demo_test"]["items_indexed"] == 3
    assert decontam["benchmarks"]["demo_test"]["rows_flagged"] == 1
    report = json.loads((build_dir / "build_report.json").read_text())
    stages = ["ingest", "decontam", "dedup", "distill", "verify", "score", "select", "shards", "card"]
    assert [s["stage"] for s in report["stages"]] == stages


def test_card_parses_and_tells_the_build_numbers(demo) -> None:
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(demo.out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mit"
    assert data["pretty_name"] and data["task_categories"] and data["size_categories"] == ["n<1K"]
    assert data["configs"][0]["config_name"] == "default"
    info = data["dataset_info"]
    info = next(c for c in info if c.get("config_name") == "default") if isinstance(info, list) else info
    assert info["splits"][0]["num_examples"] == 25
    assert [f["name"] for f in info["features"]][:3] == ["id", "source", "source_split"]
    text = card.text
    assert "not DeepSeek-R1 output" in text
    assert "| dropped: `wrong_answer` | 5 |" in text
    assert "| `no_options` | 1 |" in text
    assert "| medmcqa (train) | MIT | 11 | 1 | 9 |" in text
    assert "| `demo_test` | 3 | 1 |" in text
    assert "not medical advice" in text.lower() or "**It is not medical advice**" in text


def test_manifest_checksums_and_recipe(demo) -> None:
    manifest = json.loads((demo.out / MANIFEST).read_text())
    assert manifest["recipe"]["name"] == "medr1-demo"
    assert manifest["recipe_sha256"] == demo.recipe.sha256
    for entry in manifest["files"]:
        assert entry["sha256"] == sha256_file(demo.out / entry["path"])
    assert sum(entry["rows"] for entry in manifest["files"]) == 25
    assert manifest["library"]["version"]
    assert read_release(demo.out).num_rows == 25


def test_corrupt_shard_is_detected(demo, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(demo.out, copy)
    shard = copy / shard_paths(copy)[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(Medr1Error, match="checksum does not match"):
        read_release(copy)


def test_two_builds_are_byte_identical(demo, tmp_path: Path) -> None:
    again = run(load_recipe("demo"), tmp_path / "again", quiet=True)
    assert shard_paths(again.out) == shard_paths(demo.out)
    for name in (*shard_paths(demo.out), MANIFEST, "README.md"):
        assert (again.out / name).read_bytes() == (demo.out / name).read_bytes(), name
    assert not any(s["cached"] for s in again.report)  # a fresh folder: every stage ran


def test_overrides_and_small_shards(tmp_path: Path) -> None:
    recipe = load_recipe("demo", ["output.shard_bytes=20000", "select.keep=all_correct", "select.max_per_question=2"])
    b = run(recipe, tmp_path / "out", quiet=True)
    assert len(b.stats["files"]) > 1
    names = [f["path"] for f in b.stats["files"]]
    n = len(names)
    assert names == [f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert read_release(b.out).num_rows == b.stats["rows"] == 46
    assert recipe.sha256 != load_recipe("demo").sha256


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher.nosuch=1"], "unknown key 'nosuch'"),
        (["stages=[ingest, fly]"], "unknown stage 'fly'"),
        (["teacher.template=v9"], "unknown prompt template 'v9'"),
        (["sources=[]"], "'sources' must be a non-empty list"),
        (["novalue"], "expected KEY=VALUE"),
    ],
)
def test_bad_recipes_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(Medr1Error, match=message):
        load_recipe("demo", overrides)


def test_missing_cached_response_is_an_error_not_a_request(tmp_path: Path) -> None:
    recipe = load_recipe("demo", ["teacher.samples=3"])
    with pytest.raises(Medr1Error, match=r"27 of 81 teacher responses are not in the cache"):
        run(recipe, tmp_path / "out", quiet=True)


def test_real_recipe_describes_the_full_build() -> None:
    recipe = load_recipe("medr1-170k")
    names = {s.spec.split("=")[0] for s in recipe.sources}
    assert {"medqa", "medmcqa", "pubmedqa", "headqa"} <= names
    assert all("=" not in s.spec for s in recipe.sources)  # Hub copies
    assert all(s.split != "test" for s in recipe.sources)  # test splits are benchmarks, never training data
    # DeepSeek retired deepseek-reasoner on 2026-07-24: the real build runs R1-0528 on the user's own vLLM
    assert recipe.teacher.model == "deepseek-ai/DeepSeek-R1-0528" and recipe.teacher.endpoint == "vllm"
    assert not recipe.teacher.offline


# ------------------------------------------------------------------------- the distill stage's columnar cache reader


def test_columnar_cache_reader_gives_the_same_traces_as_the_record_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build reads the response cache columnar; every record shape must come out as `ResponseCache.load` +
    `split_reasoning` + `cost_usd` make it (the per-record path stays as the fallback)."""
    import pyarrow as pa

    from medr1_data import teacher as d
    from medr1_data.schema import QUESTION_SCHEMA
    from medr1_data.teacher import cache as cache_module
    from medr1_data.teacher import traces

    rows = [
        {
            "id": f"medqa/train/q{i}",
            "source": "medqa",
            "source_split": "train",
            "source_id": f"q{i}",
            "question": f"Question {i}?",
            "options": [{"label": "A", "text": "x"}, {"label": "B", "text": f"y{i}"}],
            "answer_label": "A",
            "context": None,
            "meta": "{}",
            "license": "mit",
        }
        for i in range(12)
    ]
    table = pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA)
    teacher = d.TeacherSettings(
        model="m", endpoint="openai", api_key_env=None, cache=str(tmp_path / "c"), offline=True, samples=1,
        price_input_cache_hit_per_m=0.1, price_input_per_m=0.5, price_output_per_m=2.0,
    )  # fmt: skip
    keys = [k for _, _, k in d.plan_requests(table, teacher).requests]
    messages = [
        {"role": "assistant", "content": " The answer is A.\n", "reasoning_content": "\n Think.\x1c "},
        {"role": "assistant", "content": "B", "reasoning": "vLLM field", "reasoning_content": ""},
        {"role": "assistant", "content": "<think>inline</think> A"},
        {"role": "assistant", "content": "prefilled thought</think>\nA"},
        {"role": "assistant", "content": "<think>cut off while thinking"},
        {"role": "assistant", "content": "no thinking at all", "tool_calls": None},
        {"role": "assistant", "content": None, "reasoning_content": "only thinking"},
        {"role": "assistant", "content": "A", "reasoning_content": "   "},
        {"role": "assistant", "content": "A", "reasoning_content": "first"},
        {"role": "assistant", "content": "A", "reasoning_content": "second: the last record of a key wins"},
    ]
    usages = [
        {"prompt_tokens": 100, "completion_tokens": 50, "prompt_cache_hit_tokens": 40, "prompt_cache_miss_tokens": 60},
        {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 200}},
        {},
        None,
        {"prompt_tokens": 3},
    ]
    records = []
    for i, msg in enumerate(messages):
        key = keys[min(i, 8)]  # records 8 and 9 share a key
        usage = usages[i % len(usages)]
        records.append(d.cache_record(key, teacher, 0, msg, "stop" if i % 4 else "length", usage, 1.5, id=f"r{i}"))
    d.ResponseCache(teacher.cache).append(records)
    with (tmp_path / "c" / d.CACHE_FILE).open("ab") as f:
        f.write(b'{"key": "half-written')  # a writer killed mid-record
    # keys[9..11] are not in the cache: missing rows with their error
    monkeypatch.setattr(traces, "SPLIT_BATCH_ROWS", 5)  # batch edges inside the table
    columnar = d.run_distill(table, teacher)
    reader = cache_module.read_fast
    assert reader((tmp_path / "c" / d.CACHE_FILE).read_bytes().rpartition(b"\n")[0] + b"\n") is not None
    monkeypatch.setattr(cache_module, "read_fast", lambda block, schema=None: None)
    by_record = d.run_distill(table, teacher)
    assert columnar.missing == by_record.missing == 3 and columnar.first_missing == by_record.first_missing
    assert columnar.table.schema == by_record.table.schema
    assert columnar.table.to_pylist() == by_record.table.to_pylist()
    got = columnar.table.to_pylist()
    assert got[0]["reasoning"] == "Think." and got[8]["reasoning"].startswith("second")
    assert got[9]["error"] == "not in the cache (offline)" and got[9]["reasoning"] is None
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"key": "k", "usage": {"prompt_tokens": "12"}, "message": {"content": "A"}}\n')
    assert reader(odd.read_bytes()) is None  # a record the columnar reader cannot type: the record reader decides


def test_real_recipe_writes_out_every_threshold() -> None:
    """Every stage threshold is in the medr1-170k recipe (and so in its hash, the manifest and the card)."""
    import dataclasses

    from medr1_data.decontam import DecontamSettings
    from medr1_data.dedup import DedupSettings
    from medr1_data.score import ScoreSettings
    from medr1_data.select import SelectSettings

    raw = load_recipe("medr1-170k").raw
    sections = [
        (DecontamSettings, raw["decontam"]["settings"], ()),
        (DedupSettings, raw["dedup"]["settings"], ("source_priority",)),  # a keep rule, not a threshold
        (ScoreSettings, raw["score"], ()),
        (SelectSettings, raw["select"], ()),
    ]
    for cls, section, rules in sections:
        missing = {f.name for f in dataclasses.fields(cls)} - set(section) - set(rules)
        assert not missing, f"{cls.__name__}: {sorted(missing)} not in the recipe"


def test_verify_in_batches_equals_verify_at_once(demo, monkeypatch: pytest.MonkeyPatch) -> None:
    from medr1_data import verify as v

    traces = pq.read_table(demo.build_dir / "checkpoints" / "03-distill")
    whole = v.verify(traces)
    monkeypatch.setattr(v, "BATCH_ROWS", 7)
    assert v.verify(traces).equals(whole)
    assert whole.column("verify_reason").to_pylist().count("correct") > 20


# ------------------------------------------------------------------------- counts, stops and messages at the door


def test_a_teacher_that_writes_no_thinking_still_counts_every_trace(tmp_path: Path) -> None:
    """`teacher traces` counts what the teacher returned, whatever its shape (here: no reasoning at all)."""
    demo_cache = Path(load_recipe("demo").resolve(load_recipe("demo").teacher.cache)) / "responses.jsonl"
    lines = []
    for line in demo_cache.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        rec["message"] = {"role": "assistant", "content": rec["message"]["content"]}
        lines.append(json.dumps(rec))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "responses.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = [f"teacher.cache={tmp_path / 'cache'}", "select.min_quality=0", "select.reject_flags=[truncated]"]
    b = run(load_recipe("demo", overrides), tmp_path / "r", True)
    rows = dict(summary_rows(b))
    assert rows["teacher traces"] == 54  # 27 questions sent x 2 samples, as with thinking
    dropped = sum(v for k, v in rows.items() if k.startswith("  dropped"))
    assert rows["traces kept"] + dropped == rows["teacher traces"]
    assert read_release(b.out).column("reasoning").null_count == rows["traces kept"]


def test_a_build_that_keeps_nothing_stops_and_writes_no_release(tmp_path: Path) -> None:
    out = tmp_path / "release"
    with pytest.raises(Medr1Error, match=r"no trace was kept \(55 rows; dropped: .*\); no release was written"):
        overrides = ["score.short_reasoning_tokens=1000000", "score.weights={short_reasoning: 1.0}"]
        run(load_recipe("demo", overrides), out, quiet=True)  # every trace "short": quality 0 < min_quality 0.5
    assert not out.exists()  # the empty release folder it made is gone; the build folder keeps its checkpoints
    assert (tmp_path / "release.build" / "checkpoints").is_dir()


def test_a_failed_build_leaves_no_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(Medr1Error):
        run(load_recipe("demo", ["sources=[{spec: medqa=nosuch.jsonl}]"]), tmp_path / "release", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_recipe_that_needs_the_hub_says_so_at_once_offline(tmp_path: Path) -> None:
    with pytest.raises(Medr1Error, match=r"reads source medqa/train.*from the Hub, but HF_HUB_OFFLINE is set; to "
                       r"run from local files, give each source as NAME=PATH"):  # fmt: skip
        run(load_recipe("medr1-170k", ["teacher.offline=true"]), tmp_path / "release", quiet=True)
    medqa = Path(load_recipe("demo").base_dir) / "../demo/medqa_train.jsonl"
    local = load_recipe("medr1-170k", ["teacher.offline=true", f"sources=[{{spec: medqa={medqa.resolve()}}}]"])
    with pytest.raises(Medr1Error, match=r"reads benchmark medqa_us_test.*set decontam.benchmark_dir"):
        run(local, tmp_path / "release", quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.build"]  # the ingest checkpoint, for a rerun


def test_a_recipe_whose_teacher_cannot_answer_says_so_before_any_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    teacher = ["teacher.endpoint=deepseek", "teacher.offline=false", "teacher.api_key_env=DEEPSEEK_API_KEY"]
    recipe = load_recipe("demo", [*teacher, f"teacher.cache={tmp_path / 'empty-cache'}"])
    with pytest.raises(Medr1Error, match=r"asks the teacher .* at https://api.deepseek.com, but environment variable "
                       r"DEEPSEEK_API_KEY is not set"):  # fmt: skip
        run(recipe, tmp_path / "release", quiet=True)
    assert not any(tmp_path.iterdir())


def test_card_text_from_the_recipe_is_inserted_literally(tmp_path: Path) -> None:
    """User text is never a template: Jinja syntax in the recipe's card text reaches the card as written."""
    text = "Built by {{ user }} {% if x %}with{% endif %} {# not a comment #} care."
    recipe_file = tmp_path / "recipe.yaml"
    import yaml

    raw = yaml.safe_load((Path(load_recipe("demo").base_dir) / "demo.yaml").read_text())
    raw["card"]["summary"] = text
    raw["card"]["changelog"] = ["v0.1.0: {{ oops }}"]
    base = Path(load_recipe("demo").base_dir)
    for s in raw["sources"]:
        name, _, path = s["spec"].partition("=")
        s["spec"] = f"{name}={(base / path).resolve()}"
    raw["decontam"]["benchmarks"] = [f"mcq:demo_test={(base / '../demo/benchmarks/demo_test.jsonl').resolve()}"]
    raw["teacher"]["cache"] = str((base / raw["teacher"]["cache"]).resolve())
    recipe_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    b = run(load_recipe(str(recipe_file)), tmp_path / "release", quiet=True)
    card = (b.out / "README.md").read_text(encoding="utf-8")
    assert text in card and "- v0.1.0: {{ oops }}" in card
