"""The seed's results table (model × MedQA-US-TEST × MedMCQA-VALIDATION, plus the other MedR1 tasks) from lm-eval.

Usage:
  python benchmarks/eval_table.py --model LABEL=TYPE:ARGS [--model ...] [--max-gen-toks 8192] [--temperature 0]
      [--samples 1] [--limit N] [--benchmark-dir DIR] [--tasks medr1] [--out eval_table]

TYPE:ARGS is an lm-eval model and its model args, e.g.
  hf:pretrained=Qwen/Qwen2.5-7B-Instruct,dtype=bfloat16
  hf:pretrained=Qwen/Qwen2.5-7B-Instruct,peft=out/medr1-lora        (a LoRA adapter on its base)
  vllm:pretrained=deepseek-ai/DeepSeek-R1-Distill-Qwen-7B,gpu_memory_utilization=0.9,max_model_len=16384
  local-chat-completions:model=medr1-7b,base_url=http://127.0.0.1:8000/v1/chat/completions,tokenizer=ORG/NAME
Every model runs the same generative tasks with the chat template and the training system prompt. With
--samples N > 1 (sampling only) each model is run N times with seeds 0..N-1 and accuracies are averaged.
Writes OUT.md (the table) and OUT.json (numbers per model and task, plus the settings and library versions).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medr1_data import Medr1Error
from medr1_data.lm_eval_tasks import BENCHMARK_OF, TASKS, task_manager

COLUMNS = {  # task -> column header; the first two are the seed's columns
    "medr1_medqa": "MedQA-US-TEST",
    "medr1_medmcqa": "MedMCQA-VALIDATION",
    "medr1_pubmedqa": "PubMedQA-TEST",
    "medr1_mmlu_medical": "MMLU-medical-TEST",
    "medr1_headqa": "HEAD-QA-EN-TEST",
}
LIBRARIES = ("lm_eval", "medr1", "transformers", "torch", "peft", "vllm", "datasets", "accelerate")


def parse_model(spec: str) -> tuple[str, str, str]:
    """(label, lm-eval model type, model args) from `LABEL=TYPE:ARGS`."""
    label, sep, rest = spec.partition("=")
    kind, sep2, args = rest.partition(":")
    if not (sep and sep2 and label and kind):
        raise Medr1Error(
            f"--model '{spec}': expected LABEL=TYPE:ARGS, e.g. qwen=hf:pretrained=Qwen/Qwen2.5-7B-Instruct"
        )
    return label.strip(), kind.strip(), args.strip()


def versions() -> dict[str, str | None]:
    """Installed versions of the harness and the libraries that shape the numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _tokenizer_arg(args: dict[str, Any]) -> dict[str, Any]:
    name = args.get("tokenizer") or args.get("pretrained") or args.get("model")
    return {"tokenizer": str(name)} if name else {}


def run_model(
    label: str, kind: str, model_args: str, tasks: list[str], settings: dict[str, Any], metadata: dict[str, Any]
) -> dict[str, Any]:
    """Run the tasks `settings['samples']` times on one model; accuracy and truncation per task, mean over samples."""
    import lm_eval
    from lm_eval.api.registry import get_model
    from lm_eval.utils import simple_parse_args_string

    args = simple_parse_args_string(model_args)
    extra = {"batch_size": settings["batch_size"] or ("auto" if kind in ("hf", "vllm") else 1)}
    if settings["device"]:
        extra["device"] = settings["device"]
    lm = get_model(kind).create_from_arg_string(model_args, extra)
    temperature = settings["temperature"]
    gen = f"max_gen_toks={settings['max_gen_toks']},temperature={temperature},do_sample={temperature > 0}"
    if settings["top_p"] is not None:
        gen += f",top_p={settings['top_p']}"
    runs = []
    for seed in range(settings["samples"]):
        res = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            limit=settings["limit"],
            apply_chat_template=True,
            gen_kwargs=gen,
            task_manager=task_manager(include_defaults=False, metadata={**metadata, **_tokenizer_arg(args)}),
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            bootstrap_iters=0,
        )
        runs.append(res["results"])
    table: dict[str, dict[str, float | int]] = {}
    for name in runs[0]:
        acc = [r[name]["acc,committed"] for r in runs if "acc,committed" in r[name]]
        if not acc:
            continue
        table[name] = {
            "acc": sum(acc) / len(acc),
            "acc_per_sample": acc,
            "truncated": sum(r[name]["truncated,committed"] for r in runs) / len(runs),
            "n": runs[0][name].get("sample_len") or runs[0][name].get("sample_count", {}).get("acc,committed"),
        }
    return {"label": label, "model": kind, "model_args": model_args, "results": table}


def markdown(models: list[dict[str, Any]], settings: dict[str, Any], tasks: list[str]) -> str:
    """The table: one row per model, accuracy (%) per task, the size-weighted MedR1 mean and the truncation rate."""
    cols = [t for t in COLUMNS if any(t in m["results"] for m in models)]
    head = ["Model", *(COLUMNS[t] for t in cols)]
    has_group = any("medr1" in m["results"] for m in models)
    head += ["MedR1 (weighted)"] if has_group else []
    head += ["truncated"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for m in models:
        r = m["results"]
        cells = [m["label"], *(f"{100 * r[t]['acc']:.1f}" if t in r else "–" for t in cols)]
        if has_group:
            cells.append(f"{100 * r['medr1']['acc']:.1f}" if "medr1" in r else "–")
        key = "medr1" if "medr1" in r else next(iter(r))
        cells.append(f"{100 * r[key]['truncated']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    n = {COLUMNS[t]: models[0]["results"][t]["n"] for t in cols}
    lines += [
        "",
        f"Accuracy (%) of the committed answer after the thinking; generative, chat template, MedR1 system prompt. "
        f"max_gen_toks={settings['max_gen_toks']}, temperature={settings['temperature']}, "
        f"samples={settings['samples']}, limit={settings['limit']}; questions per task: "
        + ", ".join(f"{k} {v}" for k, v in n.items())
        + f". lm-eval {settings['versions']['lm_eval']}, transformers {settings['versions']['transformers']}, "
        f"vllm {settings['versions']['vllm']}. 'truncated' is the share of generations that hit max_gen_toks.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every model, print the table, write OUT.md and OUT.json."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="LABEL=TYPE:ARGS (repeat for several models)")
    p.add_argument("--tasks", default="medr1", help="comma-separated tasks or groups (default: the medr1 group)")
    p.add_argument("--max-gen-toks", type=int, default=8192)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--samples", type=int, default=1, help="runs per model with seeds 0..N-1 (needs temperature > 0)")
    p.add_argument("--limit", type=float, default=None, help="questions per task (smoke runs)")
    p.add_argument("--benchmark-dir", default=None, help="local benchmark folder (else MEDR1_BENCHMARK_DIR or the Hub)")
    p.add_argument("--batch-size", default=None, help="default: auto for hf and vllm, 1 for endpoints")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=Path("eval_table"))
    args = p.parse_args(argv)
    try:
        models = [parse_model(m) for m in args.model]
        if args.samples > 1 and args.temperature == 0:
            raise Medr1Error("--samples > 1 needs --temperature > 0 (greedy decoding gives the same answer each time)")
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        metadata = {"benchmark_dir": args.benchmark_dir} if args.benchmark_dir else {}
        limit = int(args.limit) if args.limit and args.limit >= 1 else args.limit
        settings = {
            "tasks": tasks,
            "max_gen_toks": args.max_gen_toks,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "samples": args.samples,
            "limit": limit,
            "batch_size": args.batch_size,
            "device": args.device,
            "apply_chat_template": True,
            "benchmarks": {t: BENCHMARK_OF[t] for t in TASKS},
            "benchmark_dir": args.benchmark_dir or "MEDR1_BENCHMARK_DIR or the Hub",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
        }
        rows = [run_model(label, kind, margs, tasks, settings, metadata) for label, kind, margs in models]
    except Medr1Error as e:
        print(f"eval_table: error: {e}", file=sys.stderr)
        return 2
    table = markdown(rows, settings, tasks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"settings": settings, "models": rows}, indent=2) + "\n")
    print(table)
    print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
