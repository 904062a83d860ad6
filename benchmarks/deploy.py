"""What each exported variant costs: size on disk, peak RAM while generating, CPU tokens/s at batch 1, accuracy.

Usage:
    python benchmarks/deploy.py                      # tiny random model + random LoRA adapter, exported here
        [--hidden-size 1024 --layers 8 --dtype bfloat16]   # a larger random model, where weights dominate RAM
    python benchmarks/deploy.py --export-dir DIR     # the folders `medr1-train export ... --out DIR` wrote
        [--tasks medr1_medqa,medr1_medqa_mc] [--limit 20] [--max-gen-toks 64] [--gen-tokens 32] [--threads N]

Each variant runs in its own process (so peak RAM is its own): load with its standard loader, generate
`--gen-tokens` tokens greedily from a chat prompt at batch 1 (median of 3 after a warm-up), then score the
`medr1` lm-eval tasks (`--limit` items each, the same items for every variant; benchmark files from
`MEDR1_BENCHMARK_DIR`). The merged model is the baseline of the same run: sizes and speeds are quoted as ratios to
it, and "agree" is the share of items where a variant commits to the same answer as the merged model.
GGUF files run through Transformers, which dequantizes them to float32: their accuracy is the quantized weights'
accuracy, but their RAM and speed are not llama.cpp's; where llama-cpp-python is installed each GGUF file gets a
second row measured in llama.cpp itself (speed and RAM only).
With the tiny model the numbers show the machinery works, not model quality.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEACHER_BYTES = 671e9 * 2  # DeepSeek-R1's 671B parameters in bf16
KINDS = ("int8", "gguf-f16", "gguf-q8_0", "gguf-q4_0")


def variants_in(export_dir: Path) -> list[dict[str, str]]:
    """The variants an export folder holds, merged first: kind, path and (GGUF) file name."""
    found = []
    if (export_dir / "merged" / "config.json").is_file():
        found.append({"kind": "merged", "path": str(export_dir / "merged")})
    for kind in ("int8", "int4"):
        if (export_dir / kind / "config.json").is_file():
            found.append({"kind": kind, "path": str(export_dir / kind)})
    for file in sorted((export_dir / "gguf").glob("*.gguf"), key=lambda p: -p.stat().st_size):
        quant = file.stem.rsplit("-", 1)[-1].lower()
        found.append({"kind": f"gguf-{quant}", "path": str(file.parent), "gguf_file": file.name})
    if not found or found[0]["kind"] != "merged":
        raise SystemExit(f"{export_dir}: no merged/ folder (export with --merge); it is the baseline of the table")
    return found


def size_of(variant: dict[str, str]) -> int:
    """Bytes of the variant's weight files."""
    path = Path(variant["path"])
    if "gguf_file" in variant:
        return (path / variant["gguf_file"]).stat().st_size
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


class RssSampler:
    """Peak resident set size of this process over a block, sampled every 5 ms from /proc (ru_maxrss elsewhere)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self.peak = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def load(variant: dict[str, str]) -> tuple[Any, Any]:
    """The variant's model and tokenizer through its standard Transformers loader, on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "gguf_file" in variant:
        tok = AutoTokenizer.from_pretrained(variant["path"], gguf_file=variant["gguf_file"])
        model = AutoModelForCausalLM.from_pretrained(
            variant["path"], gguf_file=variant["gguf_file"], dtype=torch.float32
        )
    else:
        tok = AutoTokenizer.from_pretrained(variant["path"])
        model = AutoModelForCausalLM.from_pretrained(variant["path"], dtype="auto", device_map="cpu")
    return model.eval(), tok


def tokens_per_second(model: Any, tok: Any, n: int) -> float:
    """Greedy tokens/s at batch 1 from the export probe prompt, exactly `n` new tokens, median of 3 after a warm-up."""
    import torch

    from medr1_train.export import probe_inputs

    inputs = probe_inputs(tok)
    kw = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "pad_token_id": tok.pad_token_id}
    times = []
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False, pad_token_id=tok.pad_token_id)
        for _ in range(3):
            t0 = time.perf_counter()
            out = model.generate(**inputs, **kw)
            times.append(time.perf_counter() - t0)
    assert out.shape[1] - inputs["input_ids"].shape[1] == n
    return n / statistics.median(times)


def accuracy(model: Any, tok: Any, tasks: list[str], limit: int, max_gen_toks: int) -> dict[str, Any]:
    """lm-eval accuracy on the medr1 tasks and each item's committed answer (for agreement with the merged model)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from medr1_data.lm_eval_tasks import task_manager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu")
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        limit=limit,
        task_manager=task_manager(),
        apply_chat_template=True,
        gen_kwargs=f"max_gen_toks={max_gen_toks}",
        log_samples=True,
        verbosity="ERROR",
    )
    result: dict[str, Any] = {}
    for task in tasks:
        metrics = out["results"][task]
        acc = next(v for k, v in metrics.items() if k.startswith("acc,"))
        preds = []
        for s in sorted(out["samples"][task], key=lambda s: s["doc_id"]):
            resp = s["filtered_resps"]
            if resp and isinstance(resp[0], list | tuple):  # multiple choice: (loglikelihood, is_greedy) per option
                preds.append(max(range(len(resp)), key=lambda i: resp[i][0]))
            else:
                preds.append(resp[0] if resp else None)
        result[task] = {"acc": acc, "preds": preds}
    return result


def llama_cpp_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Tokens/s and peak RAM of a GGUF file in llama.cpp (llama-cpp-python), greedy, exactly `gen_tokens` tokens."""
    import numpy as np
    from llama_cpp import Llama

    variant = spec["variant"]
    t0 = time.perf_counter()
    with RssSampler() as rss:  # no torch in this process: the RSS is llama.cpp's
        llm = Llama(
            model_path=str(Path(variant["path"]) / variant["gguf_file"]),
            n_ctx=1024,
            n_threads=spec.get("threads") or None,
            verbose=False,
        )
        load_s = time.perf_counter() - t0
        # The probe prompt rendered by the parent (Transformers would pull torch into this process).
        prompt = llm.tokenize(spec["prompt_text"].encode(), add_bos=False, special=True)
        times = []
        for _ in range(4):  # the first is the warm-up
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(prompt)
            for _ in range(spec["gen_tokens"]):
                llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
            times.append(time.perf_counter() - t0)
    return {
        "load_s": load_s,
        "tokens_per_s": spec["gen_tokens"] / statistics.median(times[1:]),
        "peak_rss": rss.peak,
    }


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Everything measured for one variant, in this (fresh) process."""
    if spec.get("runtime") == "llama.cpp":
        return llama_cpp_worker(spec)
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    variant = spec["variant"]
    t0 = time.perf_counter()
    model, tok = load(variant)
    load_s = time.perf_counter() - t0
    with RssSampler() as rss:
        tps = tokens_per_second(model, tok, spec["gen_tokens"])
    res: dict[str, Any] = {"load_s": load_s, "tokens_per_s": tps, "peak_rss": rss.peak}
    if spec["tasks"]:
        res["tasks"] = accuracy(model, tok, spec["tasks"], spec["limit"], spec["max_gen_toks"])
    return res


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run `worker(spec)` in a child process and return its JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{spec['variant']['kind']}: worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def probe_text(model_dir: str) -> str:
    """The export probe prompt as text, through the merged model's chat template."""
    from transformers import AutoTokenizer

    from medr1_train.export import probe_inputs

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok.decode(probe_inputs(tok)["input_ids"][0])


def has_llama_cpp() -> bool:
    """Whether llama-cpp-python is importable (optional: GGUF rows then also run in llama.cpp itself)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def export_tiny(workdir: Path, hidden_size: int, layers: int, dtype: str) -> Path:
    """Build the tiny test model, a random LoRA adapter on it, and export every CPU variant (what the tests do)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from medr1_train.cli import main as train_cli
    from tests.tiny_model import build_tiny_model

    base = build_tiny_model(workdir / "base", hidden_size=hidden_size, layers=layers)
    if dtype != "float32":
        AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)).save_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(1)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(workdir / "adapter")
    out = workdir / "tiny-medr1"
    argv = ["export", str(workdir / "adapter"), "--out", str(out), "--merge", "--quantize", ",".join(KINDS)]
    if train_cli(argv) != 0:
        raise SystemExit("export failed")
    return out


def main() -> None:
    """Export (or read) the variants, measure each in its own process, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, help="output folder of `medr1-train export` (default: tiny model)")
    p.add_argument("--tasks", default="medr1_medqa,medr1_medqa_mc", help="comma-separated lm-eval tasks ('' = none)")
    p.add_argument("--limit", type=int, default=20, help="items per task")
    p.add_argument("--max-gen-toks", type=int, default=64, help="generation budget of the generative tasks")
    p.add_argument("--gen-tokens", type=int, default=32, help="tokens generated for the tokens/s measurement")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--hidden-size", type=int, default=64, help="width of the synthetic model (no --export-dir)")
    p.add_argument("--layers", type=int, default=2, help="layers of the synthetic model (no --export-dir)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="synthetic base's dtype")
    p.add_argument("--json", type=Path, help="also write the measurements here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    tasks = [t for t in args.tasks.split(",") if t]
    if tasks and not os.environ.get("MEDR1_BENCHMARK_DIR"):
        default = ROOT.parent / "shared" / "data" / "benchmarks"
        if default.is_dir():
            os.environ["MEDR1_BENCHMARK_DIR"] = str(default)
    with tempfile.TemporaryDirectory(prefix="medr1-deploy-") as tmp:
        export_dir = args.export_dir or export_tiny(Path(tmp), args.hidden_size, args.layers, args.dtype)
        variants = variants_in(export_dir)
        rows = []
        for variant in variants:
            spec = {
                "variant": variant,
                "tasks": tasks,
                "limit": args.limit,
                "max_gen_toks": args.max_gen_toks,
                "gen_tokens": args.gen_tokens,
                "threads": args.threads,
            }
            print(f"measuring {variant['kind']} ...", file=sys.stderr, flush=True)
            rows.append({**variant, "runtime": "transformers", "bytes": size_of(variant), **run_worker(spec)})
            if "gguf_file" in variant and has_llama_cpp():
                llama = run_worker({**spec, "runtime": "llama.cpp", "prompt_text": probe_text(variants[0]["path"])})
                rows.append({**variant, "runtime": "llama.cpp", "bytes": size_of(variant), **llama})
        report_table(rows, tasks, args, export_dir)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")


def report_table(rows: list[dict[str, Any]], tasks: list[str], args: argparse.Namespace, export_dir: Path) -> None:
    """Print the comparison table, the merged model (first row) as the baseline."""
    base = rows[0]
    threads = args.threads or "default"
    print(f"\nexport: {export_dir}   tasks: {', '.join(tasks) or '-'} (limit {args.limit})   threads: {threads}\n")
    head = f"{'variant':<10} {'runtime':<13} {'size MB':>9} {'× merged':>8} {'% of 671B':>10} {'peak RAM MB':>11}"
    head += f" {'tok/s':>7} {'× merged':>8}"
    for t in tasks:
        head += f" | {t + ' acc':>{max(12, len(t) + 4)}} {'answered':>8} {'agree':>6}"
    print(head)
    for r in rows:
        runtime = r["runtime"] + ("*" if r["kind"].startswith("gguf") and r["runtime"] == "transformers" else "")
        line = (
            f"{r['kind']:<10} {runtime:<13} {r['bytes'] / 1e6:>9.2f} {r['bytes'] / base['bytes']:>8.2f} "
            f"{100 * r['bytes'] / TEACHER_BYTES:>9.2g}% {r['peak_rss'] / 1e6:>11.0f} {r['tokens_per_s']:>7.1f} "
            f"{r['tokens_per_s'] / base['tokens_per_s']:>8.2f}"
        )
        for t in tasks:
            width = max(12, len(t) + 4)
            if "tasks" not in r:  # llama.cpp rows: speed and memory only
                line += f" | {'-':>{width}} {'-':>8} {'-':>6}"
                continue
            preds, ref = r["tasks"][t]["preds"], base["tasks"][t]["preds"]
            agree = sum(a == b for a, b in zip(preds, ref, strict=True)) / max(len(ref), 1)
            # Generative tasks: the share of items where the model committed to an option at all.
            answered = [p for p in preds if isinstance(p, str)]
            share = f"{sum(p not in ('[invalid]', '') for p in answered) / len(preds):>8.2f}" if answered else "-"
            line += f" | {r['tasks'][t]['acc']:>{width}.3f} {share:>8} {agree:>6.2f}"
        print(line)
    print(
        "\n* GGUF through Transformers is dequantized to float32 on load: accuracy is the quantized weights', "
        "RAM and speed are not llama.cpp's.\n'% of 671B' is the weights' size over DeepSeek-R1's bf16 weights "
        f"({TEACHER_BYTES / 1e12:.3f} TB); 'agree' is the share of items answered as the merged model answers them\n"
        "(on generative tasks two generations that commit to nothing agree); 'answered': share with a committed option."
    )


if __name__ == "__main__":
    main()
