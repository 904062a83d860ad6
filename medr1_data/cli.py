"""`medr1-data`: thin subcommands over the library; errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medr1_data import Medr1Error, __version__

if TYPE_CHECKING:
    from medr1_data.contracts import Contract

EXIT_ERROR = 2


Sub = argparse._SubParsersAction


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_sources(args: argparse.Namespace) -> int:
    from medr1_data.sources import all_sources

    rows = [(n, ",".join(c.splits), c.license, c.hub_id or "-", c.homepage) for n, c in all_sources().items()]
    print(_table(rows, ["source", "splits", "license", "hub id", "homepage"]))
    return 0


def cmd_benchmarks(args: argparse.Namespace) -> int:
    from medr1_data.benchmarks import BENCHMARKS

    rows = [(b.name, b.source, b.split, b.hub_id or "-", b.local) for b in BENCHMARKS.values()]
    print(_table(rows, ["benchmark", "source", "split", "hub id", "file in MEDR1_BENCHMARK_DIR"]))
    return 0


def cmd_lm_eval_path(args: argparse.Namespace) -> int:
    from medr1_data.lm_eval_tasks import task_dir  # the folder only: lm_eval is not imported

    print(task_dir())
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from medr1_data.sources import load

    loaded = load(args.spec, args.split)
    _write(loaded.table, args.out)
    if args.rejects:
        _write(loaded.rejects, args.rejects)
    counts = [(args.spec, args.split, loaded.table.num_rows, loaded.rejects.num_rows)]
    print(_table(counts, ["source", "split", "rows", "rejected"]))
    for reason, n in loaded.reject_counts().items():
        print(f"  rejected: {reason}: {n}")
    if loaded.rejects.num_rows and not args.rejects and not args.quiet:
        first = loaded.rejects.slice(0, 1).to_pylist()[0]
        where = f"{first['file']} row {first['row']} field '{first['field']}'"
        print(f"first reject: {where}: {first['reason']} (write them all with --rejects FILE)", file=sys.stderr)
    return 0


def _write(table: object, path: Path) -> None:
    import pyarrow.parquet as pq

    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True)
    pq.write_table(table, path, compression="zstd")


def cmd_verify(args: argparse.Namespace) -> int:
    import pyarrow.compute as pc

    from medr1_data.streaming import stream_table
    from medr1_data.verify import verify

    counts: dict[str, int] = {}
    for table in stream_table(args.input, args.out, _contract("TRACES"), verify, args.batch_rows):
        for c in pc.value_counts(table.column("verify_reason")).to_pylist():
            counts[c["values"]] = counts.get(c["values"], 0) + c["counts"]
    print(_table(list(counts.items()), ["verify_reason", "rows"]))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import polars as pl

    from medr1_data.score import ScoreSettings, score
    from medr1_data.streaming import stream_table

    settings = _settings(args.set, ScoreSettings)
    flags: dict[str, int] = {}
    total, rows = 0.0, 0
    scored = stream_table(args.input, args.out, _contract("VERIFIED"), lambda t: score(t, settings), args.batch_rows)
    for table in scored:
        df = pl.from_arrow(table.select(["quality", "quality_score"]))
        for r in df.select(pl.col("quality").struct.field("flags").explode().drop_nulls().value_counts()).to_dicts():
            flags[r["flags"]["flags"]] = flags.get(r["flags"]["flags"], 0) + r["flags"]["count"]
        total, rows = total + float(df["quality_score"].sum()), rows + df.height
    ranked = sorted(flags.items(), key=lambda kv: -kv[1])
    print(_table(ranked or [("(none)", 0)], ["flag", "traces"]))
    print(f"mean quality_score {total / rows:.3f} over {rows} traces" if rows else "no traces")
    return 0


def _settings(pairs: list[str], cls: type) -> Any:
    """A settings dataclass from `--set KEY=VALUE` pairs, every key and type checked (`medr1_data.config`)."""
    from medr1_data import config

    values = config.apply_overrides({}, [config.split_override(p) for p in pairs])
    return config.build(cls, values, "--set")


def _contract(name: str) -> Contract:
    from medr1_data import contracts

    return getattr(contracts, name)


def _read(path: Path, contract: Contract) -> Any:
    """A Parquet table checked against the verb's input contract."""
    import pyarrow.parquet as pq

    from medr1_data.contracts import check_input

    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise Medr1Error(f"{path}: no such file") from None
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet input
        raise Medr1Error(f"{path}: cannot read as Parquet: {' '.join(str(e).split())}") from None
    return check_input(table, contract, str(path))


def cmd_decontam(args: argparse.Namespace) -> int:
    import json

    from medr1_data.benchmarks import load_benchmark
    from medr1_data.decontam import DecontamSettings, decontaminate

    table = _read(args.input, _contract("QUESTIONS"))
    benches = []
    for spec in args.benchmark:
        name, loaded = load_benchmark(spec, args.benchmark_dir)
        benches.append((name, loaded.table))
    out, report = decontaminate(table, benches, _settings(args.set, DecontamSettings))
    _write(out, args.out)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    rows = [(n, b["items_indexed"], b["rows_flagged"]) for n, b in report["benchmarks"].items()]
    print(_table(rows, ["benchmark", "items indexed", "rows flagged"]))
    print(f"{report['rows_flagged']} of {report['rows']} rows contaminated ({report['elapsed_seconds']:.1f}s)")
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    import polars as pl

    from medr1_data.dedup import DedupSettings, dedup

    out = dedup(_read(args.input, _contract("QUESTIONS")), _settings(args.set, DedupSettings))
    _write(out, args.out)
    df = pl.from_arrow(out.select(["dup_cluster", "dup_keep"]))
    clusters = df.filter(pl.col("dup_cluster").is_duplicated())["dup_cluster"].n_unique()
    print(f"{df.height} rows, {clusters} near-duplicate clusters, {int((~df['dup_keep']).sum())} rows not kept")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from medr1_data.audit import audit
    from medr1_data.benchmarks import load_benchmark, present

    loaded = [load_benchmark(spec, args.benchmark_dir) for spec in args.benchmark or present(args.benchmark_dir)]
    r = audit(args.spec, [(n, b.table) for n, b in loaded], args.out, split=args.split, batch_rows=args.batch_rows)
    acc = r["verification"]["accuracy"]
    print(
        f"{r['rows']:,} rows ({r['layout']}): {r['contamination']['rows_flagged']:,} match a benchmark item, "
        f"{r['duplicates']['duplicate_rows']:,} repeat another question, verified accuracy "
        f"{'n/a' if acc is None else f'{acc:.2%}'}; report in {args.out}/report.md, rows in {args.out}/flagged.parquet"
    )
    return 0


def _add_audit(sub: Sub) -> None:
    s = sub.add_parser("audit", help="check another reasoning dataset for benchmark leaks, duplicates, bad traces")
    spec_help = "Hub id ORG/NAME[@REV]; LAYOUT=PATH (m23k, ii_medical, openmed, huatuo_o1, messages, question:COL,..."
    s.add_argument("spec", help=spec_help + "); or a PATH (the layout read from its columns)")
    s.add_argument("--benchmark", action="append", metavar="SPEC", help="default: all in --benchmark-dir")
    s.add_argument("--benchmark-dir", type=Path, help="folder of the test files (default: $MEDR1_BENCHMARK_DIR)")
    s.add_argument("--split", default="train", help="split of a Hub dataset (%(default)s)")
    s.add_argument("--batch-rows", type=int, default=50_000, help="rows read at a time (%(default)s)")
    s.add_argument("--out", required=True, type=Path, help="folder for report.json, report.md, flagged.parquet")
    s.set_defaults(func=cmd_audit)


def cmd_build(args: argparse.Namespace) -> int:
    from medr1_data.build import run, summary_rows
    from medr1_data.recipe import load_recipe
    from medr1_data.stages import BATCH_ROWS
    from medr1_data.workers import available_cores

    recipe = load_recipe(args.recipe, args.set)
    b = run(
        recipe,
        args.out,
        quiet=args.quiet,
        from_stage=args.from_stage,
        until_stage=args.until_stage,
        batch_rows=BATCH_ROWS if args.batch_rows is None else args.batch_rows,
        workers=available_cores() if args.workers is None else args.workers,
    )
    print(_table(summary_rows(b), ["", "rows"]))
    done = [s["stage"] for s in b.report]
    if done != list(recipe.stages):
        print(f"\nran the stages up to {done[-1]}; checkpoints and build report in {b.build_dir}/")
        return 0
    print(
        f"\nwrote {b.out}/ ({len(b.stats.get('files', []))} shard(s), README.md, manifest.json); "
        f"build report, rejects and dropped rows in {b.build_dir}/"
    )
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from medr1_data.hub import push

    push(args.folder, args.repo, args.version, token_env=args.token_env, dry_run=args.dry_run)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    import json

    from medr1_data.diff import changelog_entry, diff_releases, write_changelog

    d = diff_releases(args.old, args.new)
    print(f"OLD {d['old']['ref']} (v{d['old']['version']}, {d['old']['rows']} rows)")
    print(f"NEW {d['new']['ref']} (v{d['new']['version']}, {d['new']['rows']} rows), key {'/'.join(d['key'])}\n")
    rows = [(s, v["added"], v["removed"], v["changed"], v["unchanged"]) for s, v in d["by_source"].items()]
    rows.append(("all", *(d["rows"][k] for k in ("added", "removed", "changed", "unchanged"))))
    print(_table(rows, ["source", "added", "removed", "changed", "unchanged"]))
    if d["columns_changed"]:
        print("\n" + _table(list(d["columns_changed"].items()), ["changed column", "rows"]))
    for what in ("added", "removed"):
        if d[f"columns_{what}"]:
            print(f"columns {what}: {', '.join(d[f'columns_{what}'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    if args.changelog:
        if not Path(args.new).is_dir():
            raise Medr1Error(f"--changelog: NEW must be a release folder, not {args.new}")
        write_changelog(Path(args.new), d, Path(d["old"]["folder"]))
        print(f"\nchangelog of {Path(args.new) / 'README.md'}: {changelog_entry(d)}")
    return 0


def _add_set(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def _table_verb(
    sub: Sub, name: str, func: object, help: str, input_help: str, set_help: str | None = None
) -> argparse.ArgumentParser:
    """A subcommand that reads one Parquet table and writes another: INPUT --out OUT [--set K=V] [--quiet]."""
    s = sub.add_parser(name, help=help)
    s.add_argument("input", type=Path, help=input_help)
    s.add_argument("--out", required=True, type=Path, help="output Parquet file")
    if set_help:
        _add_set(s, set_help)
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=func)
    return s


def _add_listings(sub: Sub) -> None:
    s = sub.add_parser("sources", help="list registered sources with licence and homepage")
    s.set_defaults(func=cmd_sources)
    s = sub.add_parser("benchmarks", help="list registered benchmarks (test sets) and their local file names")
    s.set_defaults(func=cmd_benchmarks)
    s = sub.add_parser("lm-eval-path", help="print the folder of the MedR1 lm-eval tasks (for lm_eval --include_path)")
    s.set_defaults(func=cmd_lm_eval_path)


def _add_ingest(sub: Sub) -> None:
    s = sub.add_parser("ingest", help="write the canonical table of one source split")
    s.add_argument("spec", help="NAME (Hub copy) or NAME=PATH (native file/folder, or Hub-layout Parquet)")
    s.add_argument("--split", required=True, help="split to read, e.g. train or test")
    s.add_argument("--out", required=True, type=Path, help="output Parquet file")
    s.add_argument("--rejects", type=Path, help="also write rejected rows (file, row, field, reason) here")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=cmd_ingest)


def _add_trace_verbs(sub: Sub) -> None:
    verify_help = "add pred_label, is_correct, verify_reason to a table of traces"
    s = _table_verb(
        sub, "verify", cmd_verify, verify_help, "Parquet file of traces (distill output, a release's shards)"
    )
    s.add_argument("--batch-rows", type=int, help="rows held in memory at a time (default: streaming.STREAM_ROWS)")
    score_help, set_help = "add the quality struct and quality_score to verified traces", "override a score threshold"
    s = _table_verb(sub, "score", cmd_score, score_help, "Parquet file of verified traces", set_help=set_help)
    s.add_argument("--batch-rows", type=int, help="rows held in memory at a time (default: streaming.STREAM_ROWS)")


def _add_question_verbs(sub: Sub) -> None:
    s = _table_verb(
        sub,
        "decontam",
        cmd_decontam,
        "flag rows that match a benchmark test item (contam_* columns)",
        "Parquet file of canonical question rows (extra columns pass through)",
        set_help="override a DecontamSettings key",
    )
    s.add_argument(
        "--benchmark",
        action="append",
        required=True,
        metavar="SPEC",
        help="NAME (registered, from the Hub or --benchmark-dir), NAME=PATH, or mcq:NAME=PATH; repeatable",
    )
    s.add_argument(
        "--benchmark-dir",
        type=Path,
        help="folder laid out like the reference benchmarks (default: $MEDR1_BENCHMARK_DIR)",
    )
    s.add_argument("--report", type=Path, help="write the JSON report (per benchmark items and flags, parameters)")

    dedup_help, set_help = "cluster near-duplicate questions (dup_cluster, dup_keep)", "override a DedupSettings key"
    _table_verb(sub, "dedup", cmd_dedup, dedup_help, "Parquet file of questions", set_help=set_help)
    _add_audit(sub)


def _add_build(sub: Sub) -> None:
    s = sub.add_parser("build", help="run a recipe end to end (default: the offline demo)")
    s.add_argument("--recipe", default="demo", help="bundled recipe name (demo, medr1-170k) or a YAML file")
    s.add_argument("--out", type=Path, help="release folder (default: the recipe's output.dir)")
    _add_set(s, "override a recipe key, e.g. --set teacher.samples=4 (repeatable)")
    s.add_argument(
        "--from",
        dest="from_stage",
        metavar="STAGE",
        help="rerun from this stage on, although its checkpoint is valid (the stages before it must have one)",
    )
    s.add_argument("--until", dest="until_stage", metavar="STAGE", help="stop after this stage")
    s.add_argument(
        "--batch-rows",
        type=int,
        metavar="N",
        help="traces per part of the trace stages (default: stages.BATCH_ROWS, 16,384; memory holds about one part "
        "a worker; the release does not depend on it)",
    )
    s.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes that map the trace stages' parts (default: the CPUs this process may use; the release does "
        "not depend on it)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=cmd_build)


def _add_release_verbs(sub: Sub) -> None:
    s = sub.add_parser(
        "push",
        help="publish a release folder to the Hub as one commit, then tag it vX.Y.Z",
        description="One atomic commit on main whose parent is the head read first (shards the new version no "
        "longer has are deleted), a check of the remote files against manifest.json, then the tag vX.Y.Z. "
        "Refuses an existing tag or a version not greater than the latest. The token is read from an environment "
        "variable only and never printed.",
    )
    s.add_argument("folder", type=Path, help="release folder written by `medr1-data build`")
    s.add_argument("--repo", required=True, metavar="ORG/NAME", help="Hub dataset repository")
    s.add_argument("--version", required=True, metavar="X.Y.Z", help="the release's version (its recipe's `version`)")
    s.add_argument("--dry-run", action="store_true", help="print the operations and version bump; contact nothing")
    s.add_argument(
        "--token-env", default="HF_TOKEN", metavar="VAR", help="environment variable holding the token (%(default)s)"
    )
    s.set_defaults(func=cmd_push)

    s = sub.add_parser(
        "diff",
        help="rows added, removed and changed between two releases (folders or ORG/NAME@vX.Y.Z)",
    )
    s.add_argument("old", help="older release: a folder or a Hub revision ORG/NAME@vX.Y.Z")
    s.add_argument("new", help="newer release: a folder or a Hub revision ORG/NAME@vX.Y.Z")
    s.add_argument("--json", type=Path, metavar="FILE", help="also write the diff as JSON")
    s.add_argument(
        "--changelog", action="store_true", help="write the diff into NEW's card changelog (NEW must be a folder)"
    )
    s.set_defaults(func=cmd_diff)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="medr1-data", description="Build and inspect the MedR1 reasoning dataset.")
    p.add_argument("--version", action="version", version=f"medr1 {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    from medr1_data.distill_cli import add_distill

    for add in (_add_listings, _add_ingest, _add_trace_verbs, add_distill, _add_question_verbs):
        add(sub)
    for add in (_add_build, _add_release_verbs):
        add(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `medr1-data`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if argv is None and len(sys.argv) == 1:
            args = parser.parse_args(["build"])
        else:
            parser.print_help()
            return 0
    return guarded("medr1-data", lambda: args.func(args))


def guarded(prog: str, call: Callable[[], int]) -> int:
    """Run a command: a Medr1Error is one `PROG: error:` line and exit 2, never a traceback (unless MEDR1_DEBUG)."""
    try:
        return call()
    except Medr1Error as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("MEDR1_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {e} (set MEDR1_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
