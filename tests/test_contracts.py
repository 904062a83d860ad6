"""Every verb at the door: tables it did not write (broken, null-typed, empty, a published release) give either the
right result or one error line naming the file and column, exit 2; never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medr1_data.cli import main
from medr1_data.shards import read_release
from tests.test_train_fixtures import build_demo_release

DEMO_BENCH = Path(__file__).resolve().parents[1] / "medr1_data" / "demo" / "benchmarks" / "demo_test.jsonl"
VERBS: dict[str, list[str]] = {
    "verify": ["verify"],
    "score": ["score"],
    "decontam": ["decontam", "--benchmark", f"mcq:demo_test={DEMO_BENCH}"],
    "dedup": ["dedup"],
    "distill": ["distill", "--model", "m", "--endpoint", "openai", "--base-url", "http://127.0.0.1:9/v1", "--offline"],
}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """All rows of a published release, as `load_dataset` users have them (no build-internal columns)."""
    return read_release(build_demo_release(tmp_path_factory.mktemp("contracts")))


def _drop(name: str) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.drop_columns([name])


def _replace(name: str, make: Callable[[pa.Table], pa.Array]) -> Callable[[pa.Table], pa.Table]:
    return lambda t: t.set_column(t.schema.get_field_index(name), name, make(t))


def _json_options(t: pa.Table) -> pa.Array:
    return pa.array([json.dumps(o) for o in t.column("options").to_pylist()])


# (verb, change to the release table, expected: "ok" or the error text after "FILE: ")
CASES = [
    *[(v, lambda t: t, "ok") for v in VERBS],  # a published release, re-verified and re-scored
    *[(v, lambda t: t.slice(0, 0), "ok") for v in VERBS],  # an empty table
    ("verify", _drop("response"), "missing column 'response' (string)"),
    ("verify", _drop("options"), "missing column 'options'"),
    ("verify", _replace("reasoning", lambda t: pa.nulls(t.num_rows)), "ok"),  # all-null: Arrow type null
    (
        "verify",
        _replace("answer_label", lambda t: pa.array(range(t.num_rows))),
        "column 'answer_label': expected string, found int64",
    ),
    ("verify", _replace("options", _json_options), "ok"),  # options as JSON text (a CSV or pandas export)
    ("verify", _replace("options", lambda t: pa.array(["not json"] * t.num_rows)), "column 'options': expected "),
    ("verify", _replace("response", lambda t: pa.array([1.5] * t.num_rows)), "column 'response': expected string"),
    (
        "score",
        _drop("pred_label"),
        "missing column 'pred_label' (string); expected verified traces: run medr1-data verify first",
    ),
    ("score", _drop("reasoning"), "missing column 'reasoning'"),
    ("score", _replace("reasoning", lambda t: pa.nulls(t.num_rows)), "ok"),
    ("score", _replace("response", lambda t: t.column("response").cast(pa.large_string())), "ok"),
    ("dedup", _drop("question"), "missing column 'question' (string)"),
    ("dedup", _replace("options", _json_options), "ok"),
    (
        "dedup",
        _replace("question", lambda t: pa.array([None] * t.num_rows, pa.string())),
        "row 0: column 'question' is null",
    ),
    ("decontam", _drop("options"), "missing column 'options'"),
    ("decontam", _replace("id", lambda t: pa.array(range(t.num_rows))), "column 'id': expected string, found int64"),
    ("decontam", _replace("context", lambda t: pa.nulls(t.num_rows)), "ok"),
    ("distill", _drop("question"), "missing column 'question' (string)"),
    ("distill", _drop("context"), "ok"),
]


@pytest.mark.parametrize(("verb", "change", "expected"), CASES)
def test_verbs_check_their_input_at_the_door(
    release: pa.Table,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    verb: str,
    change: Callable[[pa.Table], pa.Table],
    expected: str,
) -> None:
    table = change(release)
    if verb == "distill" and table.num_rows:
        table = table.slice(0, 0)  # offline and with an empty cache, only an empty table has nothing to request
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    out = tmp_path / "out.parquet"
    args = [*VERBS[verb][:1], str(src), "--out", str(out), *VERBS[verb][1:]]
    if verb == "distill":
        args += ["--cache", str(tmp_path / "cache")]
    code = main(args)
    err = capsys.readouterr().err
    if expected == "ok":
        assert code == 0, err
        result = pq.read_table(out)
        assert result.num_rows == table.num_rows
        assert set(table.column_names) <= set(result.column_names)  # extra columns pass through
    else:
        assert code == 2
        assert err == f"medr1-data: error: {src}: {expected}" + err.split(expected, 1)[1]
        assert err.count("\n") == 1 and "Traceback" not in err


def test_re_verifying_a_release_gives_its_own_verdicts(release: pa.Table, tmp_path: Path) -> None:
    src, out = tmp_path / "release.parquet", tmp_path / "verified.parquet"
    pq.write_table(release, src)
    assert main(["verify", str(src), "--out", str(out)]) == 0
    again = pq.read_table(out)
    for column in ("pred_label", "is_correct", "verify_reason"):
        assert again.column(column).to_pylist() == release.column(column).to_pylist()
