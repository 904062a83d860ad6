"""LoRA training throughput (tokens/s, MFU) of medr1-train's setup beside plain TRL + peft without packing.

Usage (GPU):  python benchmarks/train_throughput.py                       # Qwen2.5-7B architecture, 8K packing
Usage (CPU):  python benchmarks/train_throughput.py --preset tiny --steps 6 --warmup 2
Both runs are in the same process on the same random-weight model (nothing is downloaded) and the same examples.
Example lengths are the real prompt + completion token counts of the 862 DeepSeek-R1 traces in
../shared/data/traces (median ~1.3K, p90 ~3.9K tokens), or a log-normal fit of them where that folder is absent.

- medr1: `medr1_train.sft.sft_config` — BFD packing into `max_length` rows, padding-free (position ids restart per
  example), bf16, gradient checkpointing; the LoRA of the recipe (r=64 on all linear projections).
- baseline: TRL's SFTConfig defaults (no packing, each batch padded to its longest example) with the same LoRA,
  batch size chosen to hold about as many real tokens per step.

Model FLOPs per token count only real tokens: forward 2N and input-gradient 2N for the frozen weights (no weight
gradient), 6N for the LoRA weights, plus causal attention 12·layers·hidden·(mean attended length), where N is
the parameter count without the embedding table. Recompute from gradient checkpointing is not counted (MFU, not
HFU). MFU = tokens/s x FLOPs/token / peak bf16 dense FLOP/s of the card (--peak-tflops where it is not known).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = {
    # Qwen/Qwen2.5-7B-Instruct config.json
    "qwen2.5-7b": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064, rope_theta=1e6, tie_word_embeddings=False,
    ),
    "tiny": dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=2048, rope_theta=1e6, tie_word_embeddings=False,
    ),
}  # fmt: skip
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}
TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def real_lengths(folder: Path) -> list[tuple[int, int]]:
    """(prompt tokens, completion tokens) of the real R1 traces, from their token_usage."""
    out = []
    for f in sorted(folder.glob("deepseek_r1_*.json")):
        for row in json.loads(f.read_text(encoding="utf-8")):
            usage = row.get("token_usage") or {}
            usage = ast.literal_eval(usage) if isinstance(usage, str) else usage
            if usage.get("completion_tokens"):
                out.append((int(usage["prompt_tokens"]), int(usage["completion_tokens"])))
    return out


def examples(n: int, max_length: int, vocab: int, scale: float, seed: int = 0) -> list[dict]:
    """n tokenised examples with real lengths (x scale); labels only on the completion; over-length ones dropped."""
    import random

    rng = random.Random(seed)
    lengths = real_lengths(TRACES) if TRACES.is_dir() else []
    if not lengths:  # log-normal fit of the real totals (median 1262, mean 1847), prompt ~270
        lengths = [(270, max(64, int(rng.lognormvariate(math.log(990), 0.85)))) for _ in range(862)]
    rows = []
    while len(rows) < n:
        p, c = rng.choice(lengths)
        p, c = max(4, int(p * scale)), max(4, int(c * scale))
        if p + c > max_length:
            continue  # as medr1_train.data does: dropped, never cut
        ids = [rng.randrange(10, vocab) for _ in range(p + c)]
        rows.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return rows


def flops_per_token(model, lora_params: int, rows: list[dict]) -> float:
    """Model FLOPs per real token for LoRA training over `rows` (see the module docstring)."""
    cfg = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name and "lora_" not in name)
    tokens = sum(len(r["input_ids"]) for r in rows)
    attended = sum(len(r["input_ids"]) * (len(r["input_ids"]) + 1) / 2 for r in rows) / tokens
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * attended
    return 4 * n + 6 * lora_params + attn


def tokenizer(vocab: int):
    """A stand-in tokenizer: the data are already token ids; TRL only needs the pad and eos tokens."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "<unk>": 2}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


class StepTimer:
    """Wall time and real-token count at the end of every optimizer step."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, int]] = []
        self.trainer = None

    def callback(self):
        """A TrainerCallback that records (time, tokens so far) after each step."""
        import torch
        from transformers import TrainerCallback

        timer = self

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                timer.marks.append((time.perf_counter(), timer.trainer._total_train_tokens))

        return _CB()

    def rate(self, warmup: int) -> float:
        """Real tokens per second after the first `warmup` steps."""
        (t0, n0), (t1, n1) = self.marks[warmup - 1], self.marks[-1]
        return (n1 - n0) / (t1 - t0)


def run_one(name: str, model, tok, rows, args_obj, lora, warmup: int) -> dict:
    """Train `args_obj.max_steps` steps with a fresh LoRA on `model`; return tokens/s and memory."""
    import datasets
    import torch
    from trl import SFTTrainer

    timer = StepTimer()
    ds = datasets.Dataset.from_list(rows)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = SFTTrainer(
        model=model, args=args_obj, train_dataset=ds, processing_class=tok, peft_config=lora,
        callbacks=[timer.callback()],
    )  # fmt: skip
    timer.trainer = trainer
    trainer.train()
    lora_params = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    out = {
        "setup": name,
        "tokens_per_s": timer.rate(warmup),
        "steps": len(timer.marks),
        "lora_params": lora_params,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "tokens_per_step": (timer.marks[-1][1] - timer.marks[warmup - 1][1]) / (len(timer.marks) - warmup),
    }
    trainer.model.unload()  # the base model without LoRA layers, for the next setup
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def main() -> None:
    """Print tokens/s and MFU for medr1-train's packed LoRA setup and the plain TRL + peft baseline."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig

    from medr1_train.config import load_config
    from medr1_train.sft import lora_config, sft_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="qwen2.5-7b")
    p.add_argument("--layers", type=int, help="override the number of layers (shrink for a smoke run)")
    p.add_argument("--max-length", type=int, help="packed row length (default: the recipe's 8192; tiny: 512)")
    p.add_argument("--rows-per-step", type=int, default=1, help="packed rows per step for medr1 (per device)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--peak-tflops", type=float, help="peak bf16 dense TFLOP/s of the device (default: by name)")
    p.add_argument("--attn", default="sdpa", help="attn_implementation for both setups (e.g. flash_attention_2)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    on_gpu = torch.cuda.is_available()
    recipe = load_config("qwen2.5-7b", ["--train.output_dir", "/tmp/medr1-train-throughput"])
    max_length = args.max_length or (recipe.data.max_length if args.preset != "tiny" else 512)
    scale = max_length / recipe.data.max_length  # tiny runs keep the shape of the length distribution
    arch = dict(PRESETS[args.preset], max_position_embeddings=max(32768, max_length))
    if args.layers:
        arch["num_hidden_layers"] = args.layers
    dtype = torch.bfloat16 if on_gpu else torch.float32
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu else "cpu"):
        model = Qwen2ForCausalLM._from_config(Qwen2Config(**arch), dtype=dtype, attn_implementation=args.attn)
    tok = tokenizer(arch["vocab_size"])
    n_examples = max(64, (args.steps + 2) * args.rows_per_step * max_length // int(1300 * scale) * 3)
    rows = examples(n_examples, max_length, arch["vocab_size"], scale)
    mean_len = sum(len(r["input_ids"]) for r in rows) / len(rows)

    t = recipe.train
    t.max_steps, t.per_device_train_batch_size, t.gradient_accumulation_steps = args.steps, args.rows_per_step, 1
    t.logging_steps = t.save_steps = 10**6
    t.eval_steps, t.warmup_ratio, t.gradient_checkpointing, t.use_cpu = None, 0.0, on_gpu, not on_gpu
    recipe.data.max_length = max_length
    medr1 = sft_config(recipe, bf16=on_gpu, has_eval=False)
    batch = max(1, round(args.rows_per_step * max_length / mean_len))
    baseline = SFTConfig(
        output_dir="/tmp/medr1-train-throughput-baseline", per_device_train_batch_size=batch, max_steps=args.steps,
        gradient_accumulation_steps=1, logging_steps=10**6, save_strategy="no", report_to=["none"],
        learning_rate=t.learning_rate, bf16=on_gpu, use_cpu=not on_gpu, max_length=max_length,
        gradient_checkpointing=on_gpu, seed=0,
    )  # fmt: skip
    lora = lora_config(recipe)

    results = [
        run_one("medr1 (packed, padding-free)", model, tok, rows, medr1, lora, args.warmup),
        run_one(
            f"TRL + peft, no packing (batch {batch})", model, tok, rows, baseline, lora_config(recipe), args.warmup
        ),
    ]
    fpt = flops_per_token(model, results[0]["lora_params"], rows)
    device = torch.cuda.get_device_name() if on_gpu else "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
    for r in results:
        r["mfu"] = r["tokens_per_s"] * fpt / (peak * 1e12) if peak else None

    print(f"device: {device}; peak bf16 {peak or 'unknown'} TFLOP/s; torch {torch.__version__}")
    print(
        f"model: Qwen2 {arch['num_hidden_layers']} layers, hidden {arch['hidden_size']}, vocab {arch['vocab_size']} "
        f"({args.preset}, random weights, {dtype}); attention {args.attn}; LoRA r={recipe.lora.r} all-linear "
        f"({results[0]['lora_params'] / 1e6:.1f}M params)"
    )
    print(
        f"data: {len(rows)} examples, mean {mean_len:.0f} tokens, max_length {max_length}; {args.steps} steps, "
        f"first {args.warmup} untimed; model FLOPs/token {fpt / 1e9:.4g} G"
    )
    print()
    print(f"{'setup':<36} {'tokens/s':>10} {'tokens/step':>12} {'MFU':>7} {'peak GiB':>9}")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.1f}" if on_gpu else "n/a"
        print(f"{r['setup']:<36} {r['tokens_per_s']:>10.0f} {r['tokens_per_step']:>12.0f} {mfu:>7} {mem:>9}")
    print(f"\nmedr1 / baseline tokens/s: {results[0]['tokens_per_s'] / results[1]['tokens_per_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "peak_tflops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
