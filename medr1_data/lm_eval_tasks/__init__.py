"""lm-evaluation-harness tasks for MedR1: generative `medr1_*`, sampled `medr1_*_maj8` (maj@8, avg@8) for reasoning
models, `medr1_*_mc` for base models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASKS = ("medr1_medqa", "medr1_medmcqa", "medr1_pubmedqa", "medr1_mmlu_medical", "medr1_headqa")
MC_TASKS = tuple(f"{t}_mc" for t in TASKS)
MAJ_TASKS = tuple(f"{t}_maj8" for t in TASKS)
GROUPS = ("medr1", "medr1_mc", "medr1_maj8")
# The task each registered benchmark is scored by (medr1_data.benchmarks names).
BENCHMARK_OF = dict(
    zip(TASKS, ("medqa_us_test", "medmcqa_val", "pubmedqa_test", "mmlu_medical_test", "headqa_en_test"), strict=True)
)


def task_dir() -> Path:
    """The folder of the task YAMLs: lm-eval's `--include_path`."""
    return Path(__file__).resolve().parent


def task_manager(**kw: Any) -> Any:
    """An lm-eval `TaskManager` that knows the MedR1 tasks (extra `include_path`s and other arguments kept)."""
    from lm_eval.tasks.manager import TaskManager  # the class itself, even where medr1-eval rebinds the name

    extra = kw.pop("include_path", None) or []
    extra = list(extra) if isinstance(extra, list | tuple) else [extra]
    return TaskManager(include_path=[str(task_dir()), *map(str, extra)], **kw)
