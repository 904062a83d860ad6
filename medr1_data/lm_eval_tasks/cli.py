"""`medr1-eval`: `lm_eval` with the MedR1 tasks on its include path; every other argument passes through unchanged."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

from medr1_data.lm_eval_tasks import task_dir

SUBCOMMANDS = ("run", "ls", "validate")


def with_include_path(argv: Sequence[str]) -> list[str]:
    """`argv` with `--include_path` pointing at the MedR1 tasks, unless the user gave an include path of their own."""
    args = list(argv)
    if not args or args[0] in ("-h", "--help") or any(a.split("=", 1)[0] == "--include_path" for a in args):
        return args
    # lm_eval's legacy form (no subcommand) gets `run` inserted by lm_eval itself; keep the subcommand first.
    at = 1 if args[0] in SUBCOMMANDS else 0
    return [*args[:at], "--include_path", str(task_dir()), *args[at:]]


def _option(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def check_args(args: list[str]) -> None:
    """One-line errors, before lm_eval loads anything, for unknown tasks and a missing local model folder."""
    from medr1_data import Medr1Error
    from medr1_data.config import missing_local_path
    from medr1_data.lm_eval_tasks import task_manager

    model_args = _option(args, "--model_args") or ""
    for pair in model_args.split(","):
        key, _, value = pair.partition("=")
        if key.strip() in ("pretrained", "tokenizer", "peft") and (problem := missing_local_path(value.strip())):
            raise Medr1Error(f"--model_args {key.strip()}={problem}")
    tasks = [t.strip() for t in (_option(args, "--tasks") or "").split(",") if t.strip()]
    ours_on_disk = all((task_dir() / f"{t}.yaml").is_file() for t in tasks)  # a full task scan costs seconds
    if tasks and not ours_on_disk:
        extra = _option(args, "--include_path")
        known = set(task_manager(include_path=[extra] if extra and extra != str(task_dir()) else None).all_tasks)
        unknown = [t for t in tasks if t not in known and not Path(t).exists()]
        if unknown:
            ours = sorted(t for t in known if t.startswith("medr1"))
            raise Medr1Error(f"unknown task '{unknown[0]}' (MedR1 tasks: {', '.join(ours)}; all: medr1-eval ls tasks)")


def _also_search_medr1() -> None:
    import lm_eval.tasks

    from medr1_data.lm_eval_tasks import task_manager

    lm_eval.tasks.TaskManager = functools.partial(task_manager)  # lm_eval imports it by name at call time


def main(argv: Sequence[str] | None = None) -> int:
    """Run lm_eval's own command line with the MedR1 task folder included."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        print("medr1-eval: error: lm-eval is not installed (pip install 'medr1[eval]')", file=sys.stderr)
        return 2
    from medr1_data.cli import guarded

    args = with_include_path(sys.argv[1:] if argv is None else argv)
    if str(task_dir()) not in args:
        _also_search_medr1()  # the user's own --include_path stays; lm_eval takes only one, so add ours beside it
    sys.argv = [sys.argv[0] if sys.argv else "medr1-eval", *args]

    def call() -> int:
        check_args(args)
        return cli_evaluate() or 0

    return guarded("medr1-eval", call)


if __name__ == "__main__":
    sys.exit(main())
