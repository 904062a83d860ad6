"""`medr1-train`: subcommands over the training library; errors are one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from medr1_data import __version__
from medr1_data.cli import guarded

EXIT_ERROR = 2

# Each module exposes `add_arguments(parser)` and `run(args) -> int`; it is imported only when its verb runs,
# so `medr1-train --help` stays fast and a missing extra only breaks the verb that needs it. A module whose parser
# sets a default `overrides` receives the options it does not declare (`--key value` config overrides) there.
SUBCOMMANDS: dict[str, str] = {"sft": "medr1_train.sft", "export": "medr1_train.export"}
HELP: dict[str, str] = {
    "sft": "LoRA supervised fine-tuning (distillation) of a student on a MedR1 release",
    "export": "merge, quantise or convert a trained adapter for deployment",
}


def _error(message: str) -> int:
    print(f"medr1-train: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _missing_extra(command: str | None, e: ImportError) -> int:
    if (e.name or "").startswith("medr1"):
        raise e
    return _error(f"'{command}' needs the train extra ({e}); install it with: pip install 'medr1[train]'")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `medr1-train` parser; only `command`'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(
        prog="medr1-train", description="Train MedR1 students (LoRA distillation) and export them for deployment."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name in SUBCOMMANDS:
        p = sub.add_parser(name, help=HELP.get(name, ""), description=HELP.get(name))
        if name == command:
            importlib.import_module(SUBCOMMANDS[name]).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `medr1-train`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in SUBCOMMANDS:
        return _error(f"unknown command '{command}'; choose from {', '.join(SUBCOMMANDS)}")
    try:
        parser = build_parser(command)
    except ImportError as e:
        return _missing_extra(command, e)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(SUBCOMMANDS[args.command])

    def call() -> int:
        try:
            return int(module.run(args) or 0)
        except ImportError as e:
            return _missing_extra(args.command, e)

    return guarded("medr1-train", call)


if __name__ == "__main__":
    sys.exit(main())
