"""`medr1-data distill`: the teacher verb's options and command (one request per (question, sample) not cached)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error

EXIT_MISSING = 3  # the run ended but some responses are still missing: rerun the same command
_TEACHER_FLAGS = ("template", "samples", "concurrency", "max_tokens", "temperature", "top_p", "request_timeout")
_TEACHER_FLAGS += ("max_retries", "expected_completion_tokens", "stall_timeout", "engine")
_PRICE_FLAGS = {"price_input_cache_hit": "price_input_cache_hit_per_m", "price_input": "price_input_per_m"}
_PRICE_FLAGS |= {"price_output": "price_output_per_m"}


def teacher_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The teacher section the options describe: preset, then flags, then `--set`, the preset filling the rest."""
    from medr1_data import config
    from medr1_data.teacher.presets import expand_preset

    urls = args.base_url or []
    fields: dict[str, Any] = {"cache": str(args.cache), "offline": args.offline}
    if args.preset:
        fields["preset"] = args.preset
    else:  # no preset: the endpoint kind and the key variable follow from the URL, as before presets
        url = urls[0] if urls else None
        fields["endpoint"] = args.endpoint or ("deepseek" if url is None or "api.deepseek.com" in url else "openai")
        fields["api_key_env"] = "DEEPSEEK_API_KEY" if fields["endpoint"] == "deepseek" else None
    given = {f: getattr(args, f) for f in _TEACHER_FLAGS} | {f: getattr(args, a) for a, f in _PRICE_FLAGS.items()}
    fields |= {k: v for k, v in given.items() if v is not None}
    for name in ("model", "endpoint"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.api_key_env is not None:
        fields["api_key_env"] = args.api_key_env or None
    if urls:
        fields["base_url"] = urls[0] if len(urls) == 1 else urls
    if args.stream:
        fields["stream"] = True
    fields = config.apply_overrides(fields, [config.split_override(p) for p in args.set])
    fields = expand_preset(fields, "distill options")
    if not fields.get("model"):
        raise Medr1Error("--model or --preset is required (medr1-data distill --list-presets lists the presets)")
    return fields


def list_presets() -> str:
    """The bundled teacher presets: name, model, endpoint and how to start the server."""
    from medr1_data.teacher.presets import PRESETS

    lines = []
    for name, p in PRESETS.items():
        v = p.values
        lines.append(f"{name}: {v['model']} via {v['endpoint']} at {v['base_url']} ({p.note})")
        lines += [f"    {cmd}" for cmd in p.launch]
    return "\n".join(lines)


def cmd_distill(args: argparse.Namespace) -> int:
    """Run the verb: estimate, or fetch what the cache lacks and write the traces."""
    from medr1_data import config
    from medr1_data.cli import _contract, _read, _table, _write
    from medr1_data.teacher import TeacherSettings, estimate, run_distill

    if args.list_presets:
        print(list_presets())
        return 0
    if args.input is None:
        raise Medr1Error("INPUT is required (a Parquet file of questions)")
    teacher = config.build(TeacherSettings, teacher_fields(args), "distill options")
    table = _read(args.input, _contract("DISTILL"))
    if args.estimate:
        print(_table(estimate(table, teacher), ["", "estimate"]))
        return 0
    if args.out is None:
        raise Medr1Error("--out is required (only --estimate runs without it)")
    result = run_distill(table, teacher, quiet=args.quiet)
    _write(result.table, args.out)
    print(_table(result.summary(), ["", "value"]))
    if result.missing:
        failed = ", ".join(f"{k} {v}" for k, v in result.stats.failures.most_common()) or "not requested"
        stopped = f"; stopped early: {result.stats.stopped}" if result.stats.stopped else ""
        print(
            f"medr1-data: error: {result.missing} of {result.table.num_rows} teacher responses are missing "
            f"({failed}){stopped}; {args.out} has them with `error`; rerun the same command to request them again",
            file=sys.stderr,
        )
        return EXIT_MISSING
    return 0


def add_distill(sub: Any) -> None:
    """The `distill` subcommand and its options."""
    s = sub.add_parser(
        "distill",
        help="ask the teacher for every (question, sample) missing from the response cache; write the traces",
        description="One request per (question, sample) to OpenAI-compatible endpoints (DeepSeek's API, vLLM or "
        "SGLang serving DeepSeek-R1-0528, other providers), or through Ray Data LLM (--engine ray). Successful "
        "responses go to an append-only cache at once; rerunning the same command requests only what is missing. "
        "Exit code 3: some responses are still missing.",
    )
    s.add_argument("input", type=Path, nargs="?", help="Parquet file of questions (ingest output)")
    s.add_argument("--out", type=Path, help="output Parquet file: one row per (id, sample_idx)")
    s.add_argument("--preset", help="a bundled teacher (--list-presets); the other options override its values")
    s.add_argument("--list-presets", action="store_true", help="list the teacher presets and their launch lines")
    s.add_argument("--model", help="model name at the endpoint, e.g. deepseek-ai/DeepSeek-R1-0528")
    s.add_argument(
        "--base-url",
        action="append",
        help="OpenAI-compatible base URL, e.g. http://host:8000/v1; repeat for several endpoints (one cache for all)",
    )
    s.add_argument(
        "--endpoint",
        choices=["deepseek", "vllm", "sglang", "openai"],
        help="kind of endpoint, for the price table (default: deepseek for api.deepseek.com, else openai)",
    )
    s.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (default: DEEPSEEK_API_KEY for DeepSeek, else none)",
    )
    s.add_argument("--template", help="prompt template name (default: medr1-mcq-v1)")
    s.add_argument("--samples", type=int, help="samples per question (default: 1)")
    s.add_argument("--concurrency", type=int, help="requests in flight, all endpoints together (default: 16)")
    s.add_argument("--max-tokens", type=int, help="completion token limit, thinking included (default: 32768)")
    s.add_argument("--temperature", type=float, help="sampling temperature (default: 0.6)")
    s.add_argument("--top-p", type=float, help="nucleus sampling (default: 0.95)")
    s.add_argument("--request-timeout", type=float, metavar="S", help="seconds per request (default: 1800)")
    s.add_argument("--stream", action="store_true", help="stream tokens; a request silent for --stall-timeout retries")
    s.add_argument("--stall-timeout", type=float, metavar="S", help="streaming: seconds of silence (default: 300)")
    s.add_argument("--engine", choices=["client", "ray"], help="client (default) or ray (ray.data.llm, .[ray])")
    s.add_argument("--max-retries", type=int, metavar="K", help="retries per request (default: 6)")
    s.add_argument("--cache", type=Path, default=Path("cache/teacher"), metavar="DIR", help="cache (%(default)s)")
    s.add_argument("--price-input", type=float, metavar="USD", help="USD per 1M input tokens (cache miss)")
    s.add_argument("--price-input-cache-hit", type=float, metavar="USD", help="USD per 1M cached input tokens")
    s.add_argument("--price-output", type=float, metavar="USD", help="USD per 1M output tokens")
    s.add_argument(
        "--expected-completion-tokens", type=int, metavar="N", help="for --estimate before the cache has responses"
    )
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any teacher key, e.g. --set 'endpoints=[{url: http://a:8000/v1, max_concurrency: 64}]' "
        "--set ray.concurrency=4",
    )
    s.add_argument("--estimate", action="store_true", help="print requests, tokens and cost; request nothing")
    s.add_argument("--offline", action="store_true", help="serve from the cache only; request nothing")
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=cmd_distill)
