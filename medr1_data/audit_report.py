"""`report.md` of an audit: the numbers of `report.json`, as a person reads them."""

from __future__ import annotations

from typing import Any


def _pct(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.2f}%)" if total else f"{n:,}"


def _contamination(r: dict[str, Any]) -> list[str]:
    c = r["contamination"]
    lines = [
        "## Benchmark contamination",
        "",
        f"{_pct(c['rows_flagged'], r['rows_mapped'])} rows match a benchmark test item. Each flagged row is in "
        "`flagged.parquet` with the benchmark, the item's own id (MedQA line, MedMCQA id, PubMedQA PMID, MMLU "
        "subject/row), the rule that fired and its score.",
        "",
        "| benchmark | test items | rows flagged | by rule |",
        "|---|---:|---:|---|",
    ]
    for name, b in c["benchmarks"].items():
        rules = ", ".join(f"`{k}` {v}" for k, v in b["by_rule"].items()) or "-"
        lines.append(f"| `{name}` | {b['items']:,} | {b['rows_flagged']:,} | {rules} |")
    for name, b in c["benchmarks"].items():
        if b["examples"]:
            lines += ["", f"Examples, `{name}`:", ""]
            lines += [
                f"- `{e['id']}` = item `{e['contam_item_id']}` (`{e['contam_rule']}`, {e['contam_score']:.2f}): "
                f"{e['question']!r}"
                for e in b["examples"]
            ]
    return lines


def _quality(r: dict[str, Any]) -> list[str]:
    v = r["verification"]
    lines = ["", "## Verification", ""]
    if v["rows"]:
        lines += [f"{v['rows']:,} rows have a gold answer among their options; the traces' committed answers are "
                  f"right on {v['accuracy']:.2%} of them.", "", "| verdict | rows |", "|---|---:|"]  # fmt: skip
        lines += [f"| `{k}` | {n:,} |" for k, n in v["verdicts"].items()]
    else:
        lines.append("No row has a gold answer among lettered options: nothing to verify.")
    lines += ["", "## Trace quality", "", "| flag | traces |", "|---|---:|"]
    lines += [f"| `{k}` | {n:,} |" for k, n in r["quality_flags"].items()] or ["| (none) | 0 |"]
    return lines


def render(r: dict[str, Any]) -> str:
    """The audit report as Markdown."""
    d = r["duplicates"]
    lines = [
        f"# Audit of {r['dataset']} ({r['split']})",
        "",
        f"Layout `{r['layout']}`: {r['rows']:,} rows read, {r['rows_mapped']:,} mapped to questions and traces"
        + "".join(f", {n:,} not mapped ({k})" for k, n in r["rows_not_mapped"].items())
        + f". {_pct(r['rows_with_options'], r['rows_mapped'])} have lettered options, "
        f"{_pct(r['rows_with_gold'], r['rows_mapped'])} a gold answer, "
        f"{_pct(r['rows_with_reasoning'], r['rows_mapped'])} a reasoning trace.",
        "",
        *_contamination(r),
        "",
        "## Near-duplicates inside the dataset",
        "",
        f"{d['duplicate_rows']:,} rows repeat another question ({d['clusters_with_duplicates']:,} clusters of "
        f"{d['questions']:,} questions).",
        *(f"- `{e['id']}` repeats `{e['duplicate_of']}`" for e in d["examples"]),
        *_quality(r),
        "",
        f"Audited in {r['seconds']} s by `medr1-data audit`.",
    ]
    return "\n".join(lines) + "\n"
