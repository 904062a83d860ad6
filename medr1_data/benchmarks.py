"""Benchmark registry: each benchmark is a source's test split, loaded from the Hub or a local native copy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medr1_data import Medr1Error
from medr1_data.sources import Loaded, get_source
from medr1_data.sources.base import load_rows

BENCHMARK_DIR_ENV = "MEDR1_BENCHMARK_DIR"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark test set: which source split it is, its Hub id, and its file name in a benchmark folder."""

    name: str
    source: str
    split: str
    hub_id: str | None
    local: str


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("medqa_us_test", "medqa", "test", "GBaker/MedQA-USMLE-4-options", "medqa_us_4options_test.jsonl"),
        Benchmark("medmcqa_val", "medmcqa", "validation", "openlifescienceai/medmcqa", "medmcqa_validation.jsonl"),
        Benchmark("pubmedqa_test", "pubmedqa", "test", "qiaojin/PubMedQA", "pubmedqa"),
        Benchmark("mmlu_medical_test", "mmlu_medical", "test", "cais/mmlu", "mmlu_medical"),
        Benchmark("headqa_en_test", "headqa", "test", "EleutherAI/headqa", "headqa_en"),
        Benchmark("medxpertqa_r_test", "mcq_jsonl", "test", None, "medxpertqa_text_reasoning_test.jsonl"),
        Benchmark("medxpertqa_u_test", "mcq_jsonl", "test", None, "medxpertqa_text_understanding_test.jsonl"),
        Benchmark("medexqa_test", "mcq_jsonl", "test", None, "medexqa_test.jsonl"),
    )
}
DEFAULT_BENCHMARKS = ("medqa_us_test", "medmcqa_val", "pubmedqa_test", "mmlu_medical_test", "headqa_en_test")


def present(benchmark_dir: Path | str | None = None) -> list[str]:
    """The registered benchmarks whose file is in the benchmark folder (all default ones when there is no folder)."""
    folder = benchmark_dir or os.environ.get(BENCHMARK_DIR_ENV)
    if not folder:
        return list(DEFAULT_BENCHMARKS)
    return [name for name, b in BENCHMARKS.items() if (Path(folder) / b.local).exists()]


def resolve(spec: str, benchmark_dir: Path | str | None = None) -> tuple[str, str, str, Path | None]:
    """(name, source, split, local path or None for the Hub) for `NAME`, `NAME=PATH` or `mcq:NAME=PATH`."""
    generic = spec.startswith("mcq:")
    name, sep, path = spec.removeprefix("mcq:").partition("=")
    name = name.strip()
    if generic:
        if not sep or not path:
            raise Medr1Error(f"benchmark spec '{spec}': mcq:NAME needs =PATH to a JSON-lines file")
        return name, "mcq_jsonl", "test", Path(path)
    if name not in BENCHMARKS:
        raise Medr1Error(
            f"unknown benchmark '{name}'; registered: {', '.join(BENCHMARKS)} (or mcq:NAME=PATH for any MCQ file)"
        )
    bench = BENCHMARKS[name]
    if sep:
        return name, bench.source, bench.split, Path(path)
    folder = benchmark_dir or os.environ.get(BENCHMARK_DIR_ENV)
    if folder:
        local = Path(folder) / bench.local
        if not local.exists():
            raise Medr1Error(f"{local}: benchmark '{name}' not found in the benchmark folder {folder}")
        return name, bench.source, bench.split, local
    if bench.hub_id is None:
        raise Medr1Error(f"benchmark '{name}' has no Hub copy: give {name}=PATH or set {BENCHMARK_DIR_ENV}")
    return name, bench.source, bench.split, None


def load_benchmark(spec: str, benchmark_dir: Path | str | None = None) -> tuple[str, Loaded]:
    """The benchmark's name and its canonical test items; every item is kept, duplicate option texts included."""
    name, source, split, path = resolve(spec, benchmark_dir)
    return name, load_rows(get_source(source), split, path, keep_duplicate_options=True)
