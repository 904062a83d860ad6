"""Distillation plumbing: reasoning parsing, request keys, the append-only response cache and the offline stage."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow as pa
import pytest

import medr1_data.demo as demo_pkg
from medr1_data import Medr1Error
from medr1_data.prompts import get_template
from medr1_data.schema import QUESTION_SCHEMA, TRACE_SCHEMA
from medr1_data.teacher import (
    CACHE_FILE,
    ResponseCache,
    TeacherSettings,
    cache_record,
    distill,
    plan_requests,
    request_key,
    split_reasoning,
)

# ----------------------------------------------------------------------------------------------- split_reasoning


@pytest.mark.parametrize(
    ("message", "reasoning", "response"),
    [
        # DeepSeek API: the thinking comes back in its own field.
        (
            {"content": " <answer>C</answer>\n", "reasoning_content": "\nAF, so an embolus.\n"},
            "AF, so an embolus.",
            "<answer>C</answer>",
        ),
        # vLLM / SGLang reasoning parsers.
        (
            {"content": "The answer is (B).", "reasoning": "Free air under the diaphragm."},
            "Free air under the diaphragm.",
            "The answer is (B).",
        ),
        # Inline thinking in the content.
        (
            {"content": "<think>\nLipase 3x normal.\n</think>\n\n<answer>A</answer>"},
            "Lipase 3x normal.",
            "<answer>A</answer>",
        ),
        # The chat template pre-filled the opening tag: only the close comes back.
        (
            {"content": "Pulsatile mass, hypotension.\n</think>\nThe answer is D."},
            "Pulsatile mass, hypotension.",
            "The answer is D.",
        ),
        # No thinking at all.
        ({"content": "  The answer is C.  "}, None, "The answer is C."),
        ({"content": None}, None, ""),
        # Empty reasoning fields fall through to the content.
        ({"content": "<think>x</think>y", "reasoning_content": "", "reasoning": None}, "x", "y"),
    ],
)
def test_split_reasoning(message: dict, reasoning: str | None, response: str) -> None:
    assert split_reasoning(message) == (reasoning, response)


def test_split_reasoning_field_wins_over_inline_tags() -> None:
    msg = {"content": "<think>inline</think>answer", "reasoning_content": "field"}
    assert split_reasoning(msg) == ("field", "<think>inline</think>answer")


def test_split_reasoning_prefers_reasoning_content_over_reasoning() -> None:
    assert split_reasoning({"content": "C", "reasoning_content": "rc", "reasoning": "r"}) == ("rc", "C")


# ----------------------------------------------------------------------------------------------- request_key

MESSAGES = [
    {"role": "system", "content": "You are a medical expert."},
    {"role": "user", "content": "Question: Which vessel?\n\nOptions:\nA. SMA\nB. IMA"},
]
SAMPLING = {"temperature": 0.6, "top_p": 0.95, "max_tokens": 32768}
BASE = ("deepseek-reasoner", "medr1-mcq-v1", MESSAGES, SAMPLING, 0)


def test_request_key_is_deterministic_sha256() -> None:
    k = request_key(*BASE)
    assert k == request_key(*copy.deepcopy(BASE))
    assert len(k) == 64 and int(k, 16) >= 0
    # Dict key order does not matter.
    reordered = {k2: SAMPLING[k2] for k2 in reversed(list(SAMPLING))}
    assert request_key(BASE[0], BASE[1], MESSAGES, reordered, 0) == k


def _changed(field: str) -> tuple:
    model, template, messages, sampling, idx = copy.deepcopy(BASE)
    if field == "model":
        model = "deepseek-r1-distill"
    elif field == "template":
        template = "medr1-mcq-v2"
    elif field == "system":
        messages[0]["content"] += " "
    elif field == "user":
        messages[1]["content"] = messages[1]["content"].replace("IMA", "Celiac trunk")
    elif field == "extra_message":
        messages.append({"role": "assistant", "content": "<think>"})
    elif field in SAMPLING:
        sampling[field] = sampling[field] * 2 if field != "top_p" else 0.9
    elif field == "new_sampling_param":
        sampling["seed"] = 1
    elif field == "sample_idx":
        idx = 1
    return model, template, messages, sampling, idx


@pytest.mark.parametrize(
    "field",
    [
        "model",
        "template",
        "system",
        "user",
        "extra_message",
        "temperature",
        "top_p",
        "max_tokens",
        "new_sampling_param",
        "sample_idx",
    ],
)
def test_request_key_changes_with_every_input(field: str) -> None:
    assert request_key(*_changed(field)) != request_key(*BASE)


def test_teacher_sampling_enters_the_key() -> None:
    a, b = TeacherSettings(), TeacherSettings(temperature=0.7)
    assert a.sampling() == SAMPLING
    assert request_key("m", "t", MESSAGES, a.sampling(), 0) != request_key("m", "t", MESSAGES, b.sampling(), 0)


# ----------------------------------------------------------------------------------------------- ResponseCache


def rec(key: str, content: str = "<answer>C</answer>") -> dict:
    return {"key": key, "message": {"role": "assistant", "content": content, "reasoning_content": "é ✓ thinking"}}


def test_cache_round_trip(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "nested" / "cache")
    assert cache.load() == {}  # no file yet
    cache.append([rec("k1"), rec("k2")])
    cache.append([rec("k3")])
    assert cache.path == tmp_path / "nested" / "cache" / CACHE_FILE
    assert cache.load() == {"k1": rec("k1"), "k2": rec("k2"), "k3": rec("k3")}
    assert cache.path.read_bytes().endswith(b"\n")
    assert len(cache.path.read_bytes().splitlines()) == 3


def test_cache_later_record_with_same_key_wins(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.append([rec("k1", "first")])
    cache.append([rec("k1", "second")])
    assert cache.load()["k1"]["message"]["content"] == "second"


def test_cache_skips_half_written_last_line(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.append([rec("k1")])
    with cache.path.open("ab") as f:
        f.write(b'{"key": "k2", "message": {"role": "assis')  # a writer killed mid-line
    assert cache.load() == {"k1": rec("k1")}


def test_cache_skips_half_written_multibyte_last_line(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.append([rec("k1")])
    with cache.path.open("ab") as f:
        f.write('{"key": "k2", "x": "é'.encode()[:-1])  # cut inside a UTF-8 sequence
    assert cache.load() == {"k1": rec("k1")}


def test_cache_append_after_half_written_line(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.append([rec("k1")])
    with cache.path.open("ab") as f:
        f.write(b'{"key": "k2", "message": {"role": "assis')
    cache.append([rec("k3")])
    assert cache.load() == {"k1": rec("k1"), "k3": rec("k3")}


def test_cache_append_after_half_written_line_keeps_records_on_their_own_lines(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path)
    cache.append([rec("k1")])
    with cache.path.open("ab") as f:
        f.write(b'{"key": "k2", "mess')
    cache.append([rec("k3")])
    lines = cache.path.read_bytes().split(b"\n")
    assert json.loads(lines[0]) == rec("k1")
    assert json.loads(lines[-2]) == rec("k3")  # not glued onto the partial line
    assert lines[-1] == b""


@pytest.mark.parametrize("bad", [b"not json\n", b'{"key": "k2", "message": \n', b"\xff\xfe\n"])
def test_cache_invalid_complete_line_raises(tmp_path: Path, bad: bytes) -> None:
    cache = ResponseCache(tmp_path)
    cache.append([rec("k1")])
    with cache.path.open("ab") as f:
        f.write(bad)
    cache.append([rec("k3")])
    with pytest.raises(Medr1Error, match=r"line 2 is not a cache record"):
        cache.load()


# ----------------------------------------------------------------------------------------------- distill

QUESTIONS = [
    {
        "id": "medqa/train/q1",
        "source": "medqa",
        "source_split": "train",
        "source_id": "q1",
        "question": "A 72-year-old man with atrial fibrillation has abdominal pain out of proportion to the exam.",
        "options": [
            {"label": "A", "text": "Acute pancreatitis"},
            {"label": "B", "text": "Perforated peptic ulcer"},
            {"label": "C", "text": "Acute mesenteric ischemia"},
        ],
        "answer_label": "C",
        "context": None,
        "meta": "{}",
        "license": "mit",
    },
    {
        "id": "pubmedqa/train/123",
        "source": "pubmedqa",
        "source_split": "train",
        "source_id": "123",
        "question": "Does early mobilisation shorten hospital stay?",
        "options": [{"label": "A", "text": "yes"}, {"label": "B", "text": "no"}, {"label": "C", "text": "maybe"}],
        "answer_label": "A",
        "context": "In a randomised trial of 200 patients, early mobilisation shortened stay by two days.",
        "meta": "{}",
        "license": "mit",
    },
]


def _teacher(cache: Path, **kw) -> TeacherSettings:
    return TeacherSettings(
        model="test/teacher",
        endpoint="recorded",
        api_key_env=None,
        samples=2,
        cache=str(cache),
        offline=True,
        price_input_per_m=1.0,
        price_output_per_m=2.0,
        **kw,
    )


def _fill(table: pa.Table, teacher: TeacherSettings, skip: int | None = None) -> None:
    records = []
    for n, (i, s, key) in enumerate(plan_requests(table, teacher).requests):
        if n == skip:
            continue
        msg = {"role": "assistant", "content": f"<think>thought {i}.{s}</think>\nThe answer is (C)."}
        usage = {"prompt_tokens": 100 * (i + 1), "completion_tokens": 1000 + s}
        records.append(cache_record(key, teacher, s, msg, "stop" if s == 0 else "length", usage, 1.5))
    ResponseCache(teacher.cache).append(records)


def test_requests_for_uses_the_template_messages() -> None:
    table = pa.Table.from_pylist(QUESTIONS, schema=QUESTION_SCHEMA)
    teacher = TeacherSettings(samples=3)
    needed = plan_requests(table, teacher).requests
    assert [(i, s) for i, s, _ in needed] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert len({k for _, _, k in needed}) == 6
    q = QUESTIONS[1]
    msgs = get_template(teacher.template).messages(q["question"], q["options"], q["context"])
    assert needed[4][2] == request_key(teacher.model, teacher.template, msgs, teacher.sampling(), 1)


def test_distill_serves_from_cache(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(QUESTIONS, schema=QUESTION_SCHEMA)
    teacher = _teacher(tmp_path / "cache")
    _fill(table, teacher)
    out = distill(table, teacher)
    assert out.schema.names[: len(TRACE_SCHEMA)] == TRACE_SCHEMA.names
    assert out.select(TRACE_SCHEMA.names).schema.equals(TRACE_SCHEMA)
    d = out.to_pydict()
    assert d["id"] == ["medqa/train/q1", "medqa/train/q1", "pubmedqa/train/123", "pubmedqa/train/123"]
    assert d["sample_idx"] == [0, 1, 0, 1]
    assert d["reasoning"] == ["thought 0.0", "thought 0.1", "thought 1.0", "thought 1.1"]
    assert d["response"] == ["The answer is (C)."] * 4
    assert d["finish_reason"] == ["stop", "length", "stop", "length"]
    assert d["teacher_model"] == ["test/teacher"] * 4
    assert d["prompt_template"] == ["medr1-mcq-v1"] * 4
    assert d["prompt_tokens"] == [100, 100, 200, 200]
    assert d["completion_tokens"] == [1000, 1001, 1000, 1001]
    assert d["cost_usd"] == pytest.approx(
        [(100 + 2000) / 1e6, (100 + 2002) / 1e6, (200 + 2000) / 1e6, (200 + 2002) / 1e6]
    )
    assert d["error"] == [None] * 4
    assert d["context"][2] == QUESTIONS[1]["context"]


def test_distill_missing_response_names_the_count(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(QUESTIONS, schema=QUESTION_SCHEMA)
    teacher = _teacher(tmp_path / "cache")
    _fill(table, teacher, skip=3)
    with pytest.raises(Medr1Error, match=r"1 of 4 teacher responses are not in the cache.*pubmedqa/train/123 sample 1"):
        distill(table, teacher)


def test_distill_other_sampling_misses_everything(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(QUESTIONS, schema=QUESTION_SCHEMA)
    _fill(table, _teacher(tmp_path / "cache"))
    with pytest.raises(Medr1Error, match=r"4 of 4 teacher responses"):
        distill(table, _teacher(tmp_path / "cache", temperature=1.0))


def test_distill_with_no_cache_file(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(QUESTIONS[:1], schema=QUESTION_SCHEMA)
    with pytest.raises(Medr1Error, match=r"2 of 2 teacher responses"):
        distill(table, _teacher(tmp_path / "absent"))


# ----------------------------------------------------------------------------------------------- demo drift


def test_demo_cache_matches_traces_and_template() -> None:
    from medr1_data.demo.record import demo_records

    hint = "the demo cache is stale: run `python -m medr1_data.demo.record` and commit demo/cache/responses.jsonl"
    committed = ResponseCache(Path(demo_pkg.__file__).parent / "cache").load()
    fresh = {r["key"]: r for r in demo_records()}
    assert fresh, "demo_records() returned nothing"
    missing, extra = sorted(fresh.keys() - committed.keys()), sorted(committed.keys() - fresh.keys())
    assert not missing and not extra, f"{len(missing)} keys missing, {len(extra)} unused; {hint}"
    changed = sorted(k for k in fresh if json.loads(json.dumps(fresh[k])) != committed[k])
    assert not changed, f"{len(changed)} records differ (first {changed[:1]}); {hint}"


def test_cache_blocks_parse_in_pieces_and_a_record_longer_than_a_piece_still_reads() -> None:
    """A block of cache lines parses in 1 MiB pieces on every core; a 3 MB record (longer than a piece) makes that
    fail, and the block is read as one piece instead: the same records either way."""
    from medr1_data.teacher.cache import CACHE_COLUMNS, PARSE_PIECE_BYTES, read_fast

    def block(records: list[dict]) -> bytes:
        return "".join(json.dumps(r) + "\n" for r in records).encode()

    small = [
        {"key": f"k{i}", "model": "m", "message": {"role": "assistant", "content": f"{i} " * 500}} for i in range(3000)
    ]
    data = block(small)
    assert len(data) > 4 * PARSE_PIECE_BYTES
    table = read_fast(data, CACHE_COLUMNS)
    assert table is not None and table.column("key").to_pylist() == [r["key"] for r in small]
    assert table.column("message").combine_chunks().field("content").to_pylist() == [
        r["message"]["content"] for r in small
    ]
    huge = [small[0], {**small[1], "message": {"role": "assistant", "content": "x" * 3_000_000}}, small[2]]
    table = read_fast(block(huge), CACHE_COLUMNS)
    assert table is not None and table.column("key").to_pylist() == ["k0", "k1", "k2"]
    assert len(table.column("message")[1]["content"].as_py()) == 3_000_000


def test_the_cache_spills_in_pieces_in_workers_and_the_last_record_still_wins(tmp_path: Path) -> None:
    """Two workers read the cache in four pieces of lines; a partition's records come back in file order across
    the pieces, so a key answered twice keeps its later record, and a key the cache lacks is missing."""
    import polars as pl

    from medr1_data.teacher.cache import ResponseCache
    from medr1_data.teacher.spill import KEY_SCHEMA, Spill, read_spill
    from medr1_data.workers import Pool

    cache = ResponseCache(tmp_path / "cache")
    cache.folder.mkdir()
    lines = [
        {"key": f"k{i}", "model": "m", "message": {"role": "assistant", "content": f"v{i} " * 40}} for i in range(400)
    ]
    lines.append({"key": "k7", "model": "m", "message": {"role": "assistant", "content": "the later answer"}})
    cache.path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    keys = pl.DataFrame(
        {
            "part": [i % 3 for i in range(401)],
            "row": list(range(401)),
            "sample": [0] * 401,
            "key": [f"k{i}" for i in range(401)],
        },
        schema=KEY_SCHEMA,
    )
    pool = Pool(2)
    try:
        spill = Spill(tmp_path / "spill", keys, pool)
        spill.scan(cache)
    finally:
        pool.close()
    assert spill.pieces == 4 and max(len(spill.paths(p)) for p in range(3)) > 1
    assert spill.missing().to_list() == ["k400"]
    for p in range(3):
        records = read_spill(spill.paths(p)).to_pylist()
        expected = [r for r in lines if int(r["key"][1:]) % 3 == p]
        assert [(r["key"], r["message"]["content"]) for r in records] == [
            (r["key"], r["message"]["content"]) for r in expected
        ]
