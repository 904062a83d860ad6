"""`medr1-data` as users run it: help on every subcommand, one-line errors with non-zero exits, outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from medr1_data.cli import build_parser, main

from .conftest import FIXTURES

SUBCOMMANDS = [
    "sources",
    "benchmarks",
    "ingest",
    "verify",
    "score",
    "distill",
    "decontam",
    "dedup",
    "build",
    "push",
    "diff",
    "lm-eval-path",
    "audit",
]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script's behaviour, in a subprocess (exit codes and stderr as users see them)."""
    return subprocess.run(
        [sys.executable, "-m", "medr1_data.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(choices) == sorted(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0


def test_sources_lists_licence_and_homepage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    for name in ("medqa", "medmcqa", "pubmedqa", "mmlu_medical", "headqa", "mcq_jsonl"):
        assert name in out
    assert "GBaker/MedQA-USMLE-4-options" in out and "https://medmcqa.github.io" in out


def test_ingest_writes_table_and_rejects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "train.jsonl"
    good = {"question": "Q?", "options": {"A": "x", "B": "y"}, "answer_idx": "A"}
    src.write_text(json.dumps(good) + "\n" + json.dumps({**good, "question": "R?", "answer_idx": "Z"}) + "\n")
    rc = main(
        [
            "ingest",
            f"mcq_jsonl={src}",
            "--split",
            "train",
            "--out",
            str(tmp_path / "o" / "q.parquet"),
            "--rejects",
            str(tmp_path / "r.parquet"),
        ]
    )
    assert rc == 0
    assert pq.read_table(tmp_path / "o" / "q.parquet").num_rows == 1
    rejects = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert [(r["row"], r["reason"]) for r in rejects] == [(2, "answer_not_in_options")]
    assert "answer_not_in_options: 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "nosuch=x", "--split", "train", "--out", "o.parquet"], "unknown source 'nosuch'"),
        (["ingest", "medqa=missing.jsonl", "--split", "test", "--out", "o.parquet"], "missing.jsonl: no such file"),
        (
            [
                "ingest",
                f"medmcqa={FIXTURES / 'sources' / 'medqa' / 'train.jsonl'}",
                "--split",
                "train",
                "--out",
                "o.parquet",
            ],
            "no row could be read as 'medmcqa'",
        ),
        (["ingest", "medqa", "--split", "test", "--out", "o.parquet"], "cannot load from the Hub"),
        (["verify", "nothing.parquet", "--out", "o.parquet"], "nothing.parquet: no such file"),
        (["build", "--recipe", "nosuch"], "no such recipe"),
        (["build", "--set", "teacher.samples=3"], "teacher responses are not in the cache"),
    ],
)
def test_errors_are_one_line_and_non_zero(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("[medr1]")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("medr1-data: error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_build_with_no_arguments_runs_the_demo(tmp_path: Path) -> None:
    proc = run_cli("build", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "traces kept" in proc.stdout and "dropped: wrong_answer" in proc.stdout
    manifest = json.loads((tmp_path / "medr1-reasoning" / "manifest.json").read_text())
    assert manifest["files"] and all((tmp_path / "medr1-reasoning" / f["path"]).exists() for f in manifest["files"])
    assert (tmp_path / "medr1-reasoning" / "README.md").exists()


def test_verify_then_score_on_a_built_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medr1_data.build import run
    from medr1_data.recipe import load_recipe

    b = run(load_recipe("demo"), tmp_path / "rel", quiet=True)
    traces = pq.read_table(b.build_dir / "dropped.parquet").drop_columns(["quality", "quality_score"])
    pq.write_table(traces, tmp_path / "t.parquet")
    assert main(["verify", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "v.parquet")]) == 0
    assert "wrong_answer" in capsys.readouterr().out
    assert (
        main(["score", str(tmp_path / "v.parquet"), "--out", str(tmp_path / "s.parquet"), "--set", "loop_repeats=4"])
        == 0
    )
    out = capsys.readouterr().out
    assert "truncated" in out and "mean quality_score" in out
    assert pq.read_table(tmp_path / "s.parquet").column("quality_score").null_count == 0
    assert main(["score", str(tmp_path / "v.parquet"), "--out", "x.parquet", "--set", "nosuch=1"]) == 2


def test_decontam_and_dedup_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = Path(__file__).resolve().parents[1] / "medr1_data" / "demo"
    assert (
        main(
            [
                "ingest",
                f"medmcqa={demo / 'medmcqa_train.jsonl'}",
                "--split",
                "train",
                "--out",
                str(tmp_path / "q.parquet"),
            ]
        )
        == 0
    )
    bench = f"mcq:demo_test={demo / 'benchmarks' / 'demo_test.jsonl'}"
    assert (
        main(
            [
                "decontam",
                str(tmp_path / "q.parquet"),
                "--benchmark",
                bench,
                "--out",
                str(tmp_path / "d.parquet"),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    out = pq.read_table(tmp_path / "d.parquet")
    assert out.column("contaminated").to_pylist().count(True) == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["benchmarks"]["demo_test"] == {
        **report["benchmarks"]["demo_test"],
        "items_indexed": 3,
        "rows_flagged": 1,
    }
    assert "1 of 10 rows contaminated" in capsys.readouterr().out
    assert main(["dedup", str(tmp_path / "d.parquet"), "--out", str(tmp_path / "u.parquet")]) == 0
    assert pq.read_table(tmp_path / "u.parquet").column("dup_keep").to_pylist() == [True] * 10
    assert main(["decontam", str(tmp_path / "q.parquet"), "--benchmark", "nosuch", "--out", "x.parquet"]) == 2


def test_verify_and_score_stream_in_batches_with_the_same_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow as pa

    from medr1_data.score import score
    from medr1_data.verify import verify

    options = [{"label": "A", "text": "Aspirin"}, {"label": "B", "text": "Heparin"}, {"label": "C", "text": "None"}]
    responses = ["B", "The answer is A.", "", "**C**", "I think Heparin is best.", None, "A or B"]
    rows = [
        {
            "id": f"q{i}",
            "options": options,
            "answer_label": "B",
            "reasoning": f"Step {i}.\nSo the answer is B.\n" if i % 3 else "  \n",
            "response": r,
            "finish_reason": "length" if i == 2 else "stop",
            "error": None,
        }
        for i, r in enumerate(responses * 3)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=4)
    whole = score(verify(pq.read_table(tmp_path / "t.parquet")))
    for batch in ("1", "5", "1000"):
        v, s = tmp_path / f"v{batch}.parquet", tmp_path / f"s{batch}.parquet"
        assert main(["verify", str(tmp_path / "t.parquet"), "--out", str(v), "--batch-rows", batch]) == 0
        assert main(["score", str(v), "--out", str(s), "--batch-rows", batch]) == 0
        out = pq.read_table(s)
        assert out.num_rows == len(rows) and pq.ParquetFile(s).metadata.num_row_groups == -(-len(rows) // int(batch))
        for name in whole.column_names:
            assert out.column(name).to_pylist() == whole.column(name).to_pylist(), name
        meta = pq.ParquetFile(s).metadata.row_group(0)
        columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
        assert {c.compression for c in columns.values()} == {"LZ4"}  # the build's checkpoint settings
        assert columns["quality_score"].is_stats_set and not columns["reasoning"].is_stats_set
    printed = capsys.readouterr().out
    assert f"mean quality_score {pc_mean(whole):.3f} over {len(rows)} traces" in printed
    assert not list(tmp_path.glob("*.tmp"))


def pc_mean(table: object) -> float:
    import pyarrow.compute as pc

    return pc.mean(table.column("quality_score")).as_py()  # type: ignore[attr-defined]


def test_verify_of_an_empty_file_writes_the_columns(tmp_path: Path) -> None:
    import pyarrow as pa

    from medr1_data.schema import OPTION

    schema = pa.schema([("options", pa.list_(OPTION)), ("answer_label", pa.string()), ("response", pa.string())])
    pq.write_table(schema.empty_table(), tmp_path / "t.parquet")
    assert main(["verify", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "v.parquet")]) == 0
    out = pq.read_table(tmp_path / "v.parquet")
    assert out.num_rows == 0 and {"pred_label", "is_correct", "verify_reason"} <= set(out.column_names)
    assert main(["verify", str(tmp_path / "t.parquet"), "--out", "x.parquet", "--batch-rows", "0"]) == 2
