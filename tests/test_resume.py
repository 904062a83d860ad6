"""Checkpoints, resume and reproducibility of `run`: skipped stages, killed builds, changed thresholds, --from/--until,
and a resumed build that never asks the teacher twice (a real HTTP teacher on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from medr1_data import Medr1Error, stages
from medr1_data.build import run, summary_rows
from medr1_data.cli import main
from medr1_data.recipe import load_recipe
from medr1_data.shards import MANIFEST

from .teacher_server import Reply, TeacherServer

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "decontam", "dedup", "distill", "verify", "score", "select", "shards", "card"]


def release_bytes(out: Path) -> dict[str, bytes]:
    """Every file of a release folder (shards, manifest, card, images) by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def ran(b: stages.Build) -> list[str]:
    """The stages this run executed (not served from a checkpoint)."""
    return [s["stage"] for s in b.report if not s["cached"]]


def kill_in(monkeypatch: pytest.MonkeyPatch, stage: str, error: type[BaseException] = KeyboardInterrupt) -> list[int]:
    """Make `stage` die half-way (after doing its work, before returning) once; returns the call counter."""
    real = stages.STAGES[stage]
    calls = [0]

    def dying(table, b):
        calls[0] += 1
        out = real(table, b)
        if calls[0] == 1:
            raise error("killed")
        return out

    monkeypatch.setitem(stages.STAGES, stage, dying)
    return calls


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> stages.Build:
    """One uninterrupted demo build."""
    return run(load_recipe("demo"), tmp_path_factory.mktemp("ref") / "release", quiet=True)


def test_rerun_serves_every_stage_from_its_checkpoint(
    reference: stages.Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "release"
    first = run(load_recipe("demo"), out, quiet=True)
    assert ran(first) == STAGES
    before = release_bytes(out)
    for name in STAGES:  # nothing may run the second time

        def fail(table, b, name=name):
            raise AssertionError(f"stage {name} ran although its checkpoint is valid")

        monkeypatch.setitem(stages.STAGES, name, fail)
    again = run(load_recipe("demo"), out, quiet=True)
    assert ran(again) == []
    assert release_bytes(out) == before == release_bytes(reference.out)
    # the numbers the card and the summary read come back with the checkpoints
    assert summary_rows(again) == summary_rows(first) == summary_rows(reference)
    assert [{k: v for k, v in s.items() if k != "cached"} for s in again.report] == [
        {k: v for k, v in s.items() if k != "cached"} for s in first.report
    ]


@pytest.mark.parametrize(
    ("override", "first_rerun"),
    [
        ("select.min_quality=0.7", "select"),
        ("dedup.settings={near: 0.8}", "dedup"),
        ("card.pretty_name=Another name", "shards"),
    ],
)
def test_a_changed_setting_reruns_from_the_stage_that_reads_it(
    reference: stages.Build, tmp_path: Path, override: str, first_rerun: str
) -> None:
    out = tmp_path / "release"
    run(load_recipe("demo"), out, quiet=True)
    changed = run(load_recipe("demo", [override]), out, quiet=True)
    assert ran(changed) == STAGES[STAGES.index(first_rerun) :]
    # and back: the original settings find their checkpoints again up to the stage that changed
    back = run(load_recipe("demo"), out, quiet=True)
    assert ran(back) == STAGES[STAGES.index(first_rerun) :]
    assert release_bytes(out) == release_bytes(reference.out)


@pytest.mark.parametrize("stage", ["score"])
def test_a_build_killed_in_a_stage_resumes_there_and_matches_an_uninterrupted_one(
    reference: stages.Build, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    out = tmp_path / "release"
    kill_in(monkeypatch, stage)
    with pytest.raises(KeyboardInterrupt):
        run(load_recipe("demo"), out, quiet=True)
    saved = sorted(p.name for p in (out.parent / "release.build" / "checkpoints").glob("*.json"))
    assert saved == [f"{i:02d}-{s}.json" for i, s in enumerate(STAGES[: STAGES.index(stage)])]
    resumed = run(load_recipe("demo"), out, quiet=True)
    assert ran(resumed) == STAGES[STAGES.index(stage) :]
    assert release_bytes(out) == release_bytes(reference.out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["recipe_sha256"] == load_recipe("demo").sha256


def test_an_edited_library_reruns_every_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medr1_data import checkpoints

    out = tmp_path / "release"
    run(load_recipe("demo"), out, quiet=True)
    monkeypatch.setattr(checkpoints, "code_sha256", lambda: "an edited checkout")
    assert ran(run(load_recipe("demo"), out, quiet=True)) == STAGES


def test_a_damaged_checkpoint_is_not_trusted(reference: stages.Build, tmp_path: Path) -> None:
    out = tmp_path / "release"
    run(load_recipe("demo"), out, quiet=True)
    folder = out.parent / "release.build" / "checkpoints"
    part = folder / "04-verify" / "part-00000.parquet"
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])  # a half-written file renamed into place
    (out / "README.md").write_text("edited by hand\n")
    again = run(load_recipe("demo"), out, quiet=True)
    assert ran(again) == STAGES[STAGES.index("verify") :]
    assert release_bytes(out) == release_bytes(reference.out)
    shard = next((out / "data").glob("*.parquet"))
    shard.write_bytes(b"not parquet")  # a release file that no longer matches: shards and card run again
    assert ran(run(load_recipe("demo"), out, quiet=True)) == ["shards", "card"]
    assert release_bytes(out) == release_bytes(reference.out)


def test_build_report_has_every_stage_and_the_card_renders_it(reference: stages.Build) -> None:
    report = json.loads((reference.build_dir / "build_report.json").read_text())
    assert report["recipe"] == "medr1-demo" and report["recipe_sha256"] == reference.recipe.sha256
    assert report["library_version"] and report["complete"] is True
    assert [s["stage"] for s in report["stages"]] == STAGES
    for s in report["stages"]:
        assert set(s) >= {"stage", "rows_in", "rows_out", "dropped", "seconds", "peak_rss_mb", "cached"}
        assert s["seconds"] >= 0 and s["peak_rss_mb"] > 10 and s["cached"] is False
    by = {s["stage"]: s for s in report["stages"]}
    assert by["ingest"]["rows_in"] == 30 and by["ingest"]["rows_out"] == 28
    assert by["ingest"]["dropped"] == {"answer_not_in_options": 1, "no_options": 1}
    assert by["decontam"]["dropped"] == {"contaminated": 1}
    assert by["distill"]["rows_in"] == 28 and by["distill"]["rows_out"] == 55  # 27 x 2 samples + 1 not sent
    assert by["select"]["dropped"] == {"extra_sample": 21, "quality_repetition": 1, "truncated": 2, "wrong_answer": 5}
    assert by["shards"]["rows_out"] == 25 and by["shards"]["dropped"] == {"flagged by an earlier stage": 30}
    assert reference.stats["build_report"] == report["stages"]  # what the card renders


def test_from_and_until_run_a_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "release"
    assert main(["build", "--out", str(out), "--until", "dedup", "--quiet"]) == 0
    report = json.loads((tmp_path / "release.build" / "build_report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["ingest", "decontam", "dedup"] and not report["complete"]
    assert not (out / MANIFEST).exists()
    capsys.readouterr()
    assert main(["build", "--out", str(out), "--from", "select", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medr1-data: error: --from select: stage 'distill'") and err.count("\n") == 1
    assert main(["build", "--out", str(out), "--from", "nosuch", "--quiet"]) == 2
    assert "no such stage" in capsys.readouterr().err
    b = run(load_recipe("demo"), out, quiet=True)
    assert ran(b) == STAGES[3:]
    b = run(load_recipe("demo"), out, quiet=True, from_stage="select", until_stage="shards")
    assert ran(b) == ["select", "shards"] and [s["stage"] for s in b.report] == STAGES[:8]


def test_progress_on_stderr_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(load_recipe("demo"), tmp_path / "a", quiet=True)
    assert capsys.readouterr().err == ""
    run(load_recipe("demo"), tmp_path / "a", quiet=False, from_stage="score")
    lines = [line for line in capsys.readouterr().err.splitlines() if "] [" in line]
    assert [re.match(r"\[medr1\] \[(\d)/9\] (\w+): ", line).groups() for line in lines] == [
        (str(i + 1), s) for i, s in enumerate(STAGES)
    ]
    assert "from the checkpoint" in lines[0] and "rows/s" in lines[5] and "peak" in lines[5]
    assert "ETA" in lines[5]  # the previous build's report gives the remaining stages' time


def test_resumed_build_never_asks_the_teacher_twice(reference: stages.Build, tmp_path: Path, monkeypatch) -> None:
    failing = {"on": True, "n": 0}

    def reply(body: dict) -> Reply:
        failing["n"] += 1
        if failing["on"] and failing["n"] % 3 == 0:
            return Reply(kind="status", status=500)
        return Reply(reasoning="Weighing each option in turn.", content="The answer is (A).")

    overrides = [
        "teacher.endpoint=openai",
        "teacher.api_key_env=null",
        "teacher.offline=false",
        f"teacher.cache={tmp_path / 'cache'}",
        "teacher.max_retries=0",
        "teacher.concurrency=4",
        "teacher.price_input_per_m=1.0",
        "teacher.price_output_per_m=2.0",
    ]
    out = tmp_path / "release"
    with TeacherServer(default=reply) as server:
        online = load_recipe("demo", [*overrides, f"teacher.base_url={server.url}"])
        with pytest.raises(Medr1Error, match="still missing after the run"):
            run(online, out, quiet=True)  # a third of the requests fail: the stage stops, what was paid is kept
        paid_first = sum(server.paid.values())
        assert 0 < paid_first < 54
        failing["on"] = False
        kill_in(monkeypatch, "score")
        with pytest.raises(KeyboardInterrupt):
            run(online, out, quiet=True)  # resumes at distill: only the missing requests are made
        assert sum(server.paid.values()) == 54 and set(server.paid.values()) == {1}
        calls = len(server.calls)
        resumed = run(online, out, quiet=True)  # resumes at score: the teacher is not asked at all
        assert ran(resumed) == STAGES[STAGES.index("score") :]
        rerun = run(online, out, quiet=True, from_stage="distill")  # distill again: everything from the cache
        assert ran(rerun) == STAGES[STAGES.index("distill") :]
        assert len(server.calls) == calls and set(server.paid.values()) == {1}
    fresh = run(online, tmp_path / "fresh", quiet=True)  # an uninterrupted build from the same cache, no server
    assert release_bytes(out) == release_bytes(fresh.out)
    traces = pq.read_table(out.parent / "release.build" / "checkpoints" / "03-distill")
    assert traces.column("error").null_count == traces.num_rows


def test_build_killed_by_sigkill_in_the_teacher_stage_resumes_without_paying_twice(tmp_path: Path) -> None:
    """A real `kill -9` of `medr1-data build` while teacher requests are in flight."""
    cache = tmp_path / "cache" / "responses.jsonl"
    out = tmp_path / "release"
    with TeacherServer(default=Reply(reasoning="Weighing each option in turn.", content="The answer is (A).")) as s:
        s.hold_after = 20  # 20 responses, then every request hangs: the kill lands inside the distill stage
        overrides = [
            "teacher.endpoint=openai",
            f"teacher.base_url={s.url}",
            "teacher.api_key_env=null",
            "teacher.offline=false",
            f"teacher.cache={tmp_path / 'cache'}",
            "teacher.concurrency=4",
            "teacher.request_timeout=30",
        ]
        cmd = [sys.executable, "-m", "medr1_data.cli", "build", "--out", str(out), "--quiet"]
        cmd += [arg for o in overrides for arg in ("--set", o)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if cache.exists() and cache.read_bytes().count(b"\n") >= 20:
                break
            time.sleep(0.02)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, err
        saved = sorted(p.name for p in (tmp_path / "release.build" / "checkpoints").glob("*.json"))
        assert saved == ["00-ingest.json", "01-decontam.json", "02-dedup.json"]  # killed in distill
        assert sum(s.paid.values()) == 20
        s.hold_after = None
        resumed = run(load_recipe("demo", overrides), out, quiet=True)
        assert ran(resumed) == STAGES[STAGES.index("distill") :]
        assert sum(s.paid.values()) == 54 and set(s.paid.values()) == {1}  # the 20 paid ones were not asked again
    fresh = run(load_recipe("demo", overrides), tmp_path / "fresh", quiet=True)  # uninterrupted, from the cache
    assert release_bytes(out) == release_bytes(fresh.out)


@pytest.mark.parametrize("where", [0.1, 0.5, 0.97])
def test_a_checkpoint_damaged_in_place_reruns_its_stage(
    reference: stages.Build, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: float
) -> None:
    """One flipped bit, same size: the checkpoint is found damaged by its sha256; no release is made from it."""
    out = tmp_path / "release"
    run(load_recipe("demo"), out, quiet=True)
    path = out.parent / "release.build" / "checkpoints" / "03-distill" / "part-00000.parquet"
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(Medr1Error, match="stage 'distill' before it has no valid checkpoint"):
        run(load_recipe("demo"), out, quiet=True, from_stage="verify")
    capsys.readouterr()
    again = run(load_recipe("demo"), out)
    assert "checkpoint of distill is damaged" in capsys.readouterr().err
    assert ran(again) == STAGES[STAGES.index("distill") :]
    assert release_bytes(out) == release_bytes(reference.out)


def test_release_does_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    """The demo built with parts of 7 traces and with the default: the same shards, manifest and card, byte for byte;
    the small batch really cuts the trace stages into many parts."""
    small = run(load_recipe("demo"), tmp_path / "small" / "release", quiet=True, batch_rows=7)
    whole = run(load_recipe("demo"), tmp_path / "whole" / "release", quiet=True)
    parts = sorted((small.build_dir / "checkpoints" / "03-distill").glob("part-*.parquet"))
    assert len(parts) > 3
    files = sorted(p.relative_to(small.out) for p in small.out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(whole.out) for p in whole.out.rglob("*") if p.is_file())
    for name in files:
        assert (small.out / name).read_bytes() == (whole.out / name).read_bytes(), name
    dropped = [pq.read_table(b.build_dir / "dropped.parquet") for b in (small, whole)]
    assert dropped[0].equals(dropped[1]) and dropped[0].num_rows > 0


def test_release_does_not_depend_on_the_workers(tmp_path: Path) -> None:
    """The demo in parts of 7 traces mapped by two worker processes and in this process: the same checkpoint parts
    and the same release, byte for byte; the workers' peaks are added to the stages' memory."""
    two = run(load_recipe("demo"), tmp_path / "two" / "release", quiet=True, batch_rows=7, workers=2)
    one = run(load_recipe("demo"), tmp_path / "one" / "release", quiet=True, batch_rows=7, workers=1)
    for stage in ("03-distill", "04-verify", "05-score", "06-select"):
        mine = sorted((two.build_dir / "checkpoints" / stage).glob("part-*.parquet"))
        assert len(mine) > 3, stage
        for path in mine:
            assert path.read_bytes() == (one.build_dir / "checkpoints" / stage / path.name).read_bytes(), path
    assert release_bytes(two.out) == release_bytes(one.out)
    peaks = {s["stage"]: s["peak_rss_mb"] for s in two.report}
    single = {s["stage"]: s["peak_rss_mb"] for s in one.report}
    assert peaks["verify"] > single["verify"] + 50  # two interpreters with Arrow and polars loaded, at least


def test_workers_must_be_a_positive_number(tmp_path: Path) -> None:
    with pytest.raises(Medr1Error, match="--workers 0: expected a whole number >= 1"):
        run(load_recipe("demo"), tmp_path / "release", quiet=True, workers=0)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc (Linux)")
def test_workers_exit_when_the_build_is_killed(tmp_path: Path) -> None:
    """`kill -9` of a build while its workers map parts: the workers notice and exit, nothing is left running."""
    out = tmp_path / "release"
    cmd = [sys.executable, "-m", "medr1_data.cli", "build", "--out", str(out), "--quiet", "--batch-rows", "3"]
    proc = subprocess.Popen([*cmd, "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
        workers = [c for c in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        time.sleep(0.05)
    assert len(workers) == 2, "the build started no workers"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()], "workers outlived the build"
