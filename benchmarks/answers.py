"""The answer extractor on students and on real teachers, beside two baselines in the same run.

Usage: python benchmarks/answers.py [--data ../shared/data] [--show-disagreements] [--show-heldout]

- Students: tests/fixtures/answers/student_corpus.jsonl, hand-labelled responses in the styles of instruct and
  reasoning models, split (by a hash of the id) into a tuning half, which the rules were developed on, and a
  held-out half, which they were not: the held-out numbers are out of sample.
- R1: the 851 real DeepSeek-R1 completions with `</think>` in ../shared/data/traces/deepseek_r1_*.json, against the
  files' own `predicted_answer` and against that label with the 14 hand-read corrections of
  tests/fixtures/answers/r1_adjudicated.json. QwQ-32B: the 42 completions with `</think>` of its file, apart.
- Baselines: the extractor as it was before issue 16 (git BASELINE_REV, loaded from git into a throwaway module),
  and lm-eval's usual regex `(?i)answer is \\(?([A-J])\\)?` (first match over the whole generation, as lm-eval's
  `regex` filter takes it).

agreement: the label equals the reference (no answer where none is expected counts as agreement);
false commit: a label where the reference is none (share of all rows; the count is out of the rows expecting none);
wrong label: a different option than the reference; no answer: no label at all.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medr1_data.answers import extract  # noqa: E402
from tests.real_traces import load_real_traces  # noqa: E402

CORPUS = ROOT / "tests" / "fixtures" / "answers" / "student_corpus.jsonl"
ADJUDICATED = ROOT / "tests" / "fixtures" / "answers" / "r1_adjudicated.json"
BASELINE_REV = "cf134e7f4cc85b3897db0b9058e9c28fdd10c85b"  # the last commit before issue 16 changed the extractor
LM_EVAL_REGEX = re.compile(r"(?i)answer is \(?([A-J])\)?")

Extractor = Callable[[str, list[Any], str | None], str | None]


def baseline_extractor() -> Extractor | None:
    """`extract` as of BASELINE_REV, loaded into a throwaway module (None outside a git checkout with that commit)."""
    try:
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE_REV}:medr1_data/answers.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("answers_at_baseline")
    exec(compile(src, f"{BASELINE_REV[:7]}:medr1_data/answers.py", "exec"), module.__dict__)
    return lambda response, options, reasoning: module.extract(response, options, reasoning).label


def lm_eval_regex(response: str, options: list[Any], reasoning: str | None) -> str | None:
    """lm-eval's regex filter: the first `answer is X` anywhere in the generation, thinking included."""
    labels = {o["label"] for o in options}
    found = LM_EVAL_REGEX.findall(f"{reasoning or ''}\n{response or ''}")
    return found[0] if found and found[0] in labels else None


def medr1(response: str, options: list[Any], reasoning: str | None) -> str | None:
    """The extractor in this checkout."""
    return extract(response, options, reasoning).label


def rates(got: list[str | None], want: list[str | None]) -> dict[str, Any]:
    """Agreement, false commitments, wrong labels and no-answer share of `got` against the reference `want`."""
    n = len(want)
    null = sum(w is None for w in want)
    false = sum(w is None and g is not None for g, w in zip(got, want, strict=True))
    return {
        "rows": n,
        "agreement": sum(g == w for g, w in zip(got, want, strict=True)) / n,
        "false": false / n,
        "false_count": f"{false}/{null}",
        "wrong": sum(g is not None and w is not None and g != w for g, w in zip(got, want, strict=True)) / n,
        "no_answer": sum(g is None for g in got) / n,
    }


def corpus_rows() -> list[dict]:
    """The labelled student responses."""
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def trace_rows(data: Path, pattern: str) -> list[dict]:
    """The completions with `</think>` of the matching trace files, with the file's label and an adjudicated one."""
    table = load_real_traces(data / "traces", pattern).to_pylist()
    fixes = {(c["file"], c["index"]): c["label"] for c in json.loads(ADJUDICATED.read_text())["corrections"]}
    rows = []
    for r in table:
        if not r["has_think_end"]:
            continue
        key = (json.loads(r["meta"])["file"], int(r["source_id"]))
        rows.append({**r, "file": key[0], "adjudicated": fixes.get(key, r["predicted_answer"])})
    return rows


def report(name: str, rows: list[dict], want: str, extractors: dict[str, Extractor], show: bool) -> list[str]:
    """One line per extractor for `rows` against the reference column `want`; disagreements printed when asked."""
    lines = []
    for label, fn in extractors.items():
        got = [fn(r["response"], r["options"], r.get("reasoning")) for r in rows]
        s = rates(got, [r[want] for r in rows])
        lines.append(
            f"{name:34} {s['rows']:>5} {label:15} {s['agreement']:>9.1%} {s['false']:>8.1%} ({s['false_count']:>6})"
            f" {s['wrong']:>7.1%} {s['no_answer']:>9.1%}"
        )
        if show and label == "medr1":
            for r, g in zip(rows, got, strict=True):
                if g != r[want]:
                    tail = (r["response"] or "")[-300:]
                    print(f"--- {name} {r.get('id') or r['file'] + '#' + r['source_id']}: medr1={g} ref={r[want]}")
                    print(f"    {tail!r}")
    return lines


def main() -> None:
    """Print the student corpus (tuning, held-out), R1 and QwQ-32B, each beside the two baselines."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--show-disagreements", action="store_true", help="tuning half, R1 and QwQ disagreements")
    p.add_argument("--show-heldout", action="store_true", help="also the held-out half's (not for tuning rules)")
    args = p.parse_args()
    extractors: dict[str, Extractor] = {"medr1": medr1}
    if (before := baseline_extractor()) is not None:
        extractors[f"medr1 @ {BASELINE_REV[:7]}"] = before
    else:
        print(f"(git commit {BASELINE_REV[:7]} not available: the pre-issue-16 baseline is left out)")
    extractors["lm-eval regex"] = lm_eval_regex
    students = corpus_rows()
    lines = []
    for split, title in (("tune", "students, tuning half"), ("heldout", "students, held-out half")):
        rows = [r for r in students if r["split"] == split]
        show = args.show_heldout if split == "heldout" else args.show_disagreements
        lines += report(title, rows, "expected", extractors, show)
    if (args.data / "traces").is_dir():
        r1 = trace_rows(args.data, "deepseek_r1_*.json")
        lines += report(f"R1 ({len(r1)} with </think>) vs file", r1, "predicted_answer", extractors, False)
        lines += report("R1 vs adjudicated", r1, "adjudicated", extractors, args.show_disagreements)
        qwq = trace_rows(args.data, "qwq_32b_*.json")
        lines += report(f"QwQ-32B ({len(qwq)} with </think>) vs file", qwq, "predicted_answer", extractors, False)
    else:
        lines.append(f"(no ../shared/data/traces at {args.data}: R1 and QwQ-32B rows skipped)")
    print(f"{'rows':34} {'n':>5} {'extractor':15} {'agreement':>9} {'false commit':>17} {'wrong':>7} {'no answer':>9}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
