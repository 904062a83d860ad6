"""`medr1-train export`: merge a LoRA adapter into its base and write quantized variants that load and generate.

Layout of `--out DIR` (each folder is a self-contained Hub-style repo with its own model card):

    DIR/merged/     safetensors in the base's dtype, tokenizer + chat template, generation config (`--merge`)
    DIR/int8/       torchao int8 weight-only through Transformers' `TorchAoConfig` (CPU and GPU)
    DIR/int4/       torchao int4 weight-only (tinygemm kernels: CUDA only)
    DIR/gguf/       `NAME-F16.gguf`, `NAME-Q8_0.gguf`, `NAME-Q4_0.gguf` for llama.cpp / Ollama (Qwen2, Qwen3, Llama)
    DIR/export_report.json

Every variant written is loaded back with its standard loader, generates, and its logits on a fixed chat prompt
are compared with the merged model's; the numbers go into its card and the report. Everything that can be checked
without weights (arguments, adapter against base, the GGUF architecture and tokenizer, existing outputs) is checked
first; outputs are written to a staging folder and moved into DIR only when all of them are done. Separate calls add
to DIR: GGUF files of other kinds stay, and `export_report.json` lists every variant in DIR.

This module handles the arguments and runs the export; the checks, the GGUF writer, the torchao variants and the
output folders are in `checks`, `gguf`, `quantize` and `outputs`, the cards in `medr1_train.card`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error, __version__
from medr1_train.card import variant_card
from medr1_train.export.checks import (
    GENERATE_TOKENS,
    LOW_PRECISION_NOISE,
    REL_ERROR_BOUND,
    Variant,
    check_compatible,
    check_variant,
    compare,
    logits_of,
    probe_inputs,
    read_adapter,
    read_json,
    weights_bytes,
)
from medr1_train.export.gguf import check_gguf_support, gguf_variant
from medr1_train.export.outputs import (
    adapter_sha256,
    check_targets,
    commit,
    folder_of,
    kept_variants,
    previous_report,
    staging,
    write_report,
)
from medr1_train.export.quantize import torchao_variant

__all__ = [
    "KINDS",
    "LOW_PRECISION_NOISE",
    "REL_ERROR_BOUND",
    "add_arguments",
    "compare",
    "logits_of",
    "parse_kinds",
    "probe_inputs",
    "read_eval_results",
    "run",
    "training_info",
]

# kind -> the library that writes it (what each kind is: medr1_train.card.KIND_DESCRIPTIONS)
KINDS: dict[str, str] = {
    "int8": "torchao",
    "int4": "torchao",
    "gguf-f16": "gguf",
    "gguf-q8_0": "gguf",
    "gguf-q4_0": "gguf",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `medr1-train export`."""
    parser.add_argument("adapter", metavar="ADAPTER", help="folder of a trained LoRA adapter (adapter_config.json)")
    parser.add_argument(
        "--base",
        metavar="MODEL",
        help="base model folder or Hub id (default: the adapter's base_model_name_or_path)",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--merge", action="store_true", help="write the merged model to DIR/merged")
    parser.add_argument(
        "--quantize",
        action="append",
        default=[],
        metavar="KIND",
        help=f"write a quantized variant (repeatable, or comma-separated): {', '.join(KINDS)}",
    )
    parser.add_argument("--name", help="model name used in cards and GGUF file names (default: DIR's name)")
    parser.add_argument(
        "--eval-results",
        type=Path,
        metavar="FILE",
        help="lm-eval results JSON of the adapter or merged model, quoted in the cards "
        "(default: eval_results.json in the adapter folder, when present)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace variant folders that already exist")
    parser.add_argument("--no-check", action="store_true", help="skip loading each variant back (not recommended)")


def parse_kinds(values: list[str]) -> list[str]:
    """The quantization kinds asked for, in order and without repeats; unknown kinds are a one-line error."""
    kinds: list[str] = []
    for value in values:
        for kind in (k.strip().lower() for k in value.split(",")):
            if not kind:
                continue
            if kind not in KINDS:
                raise Medr1Error(f"unknown quantization kind '{kind}'; choose from {', '.join(KINDS)}")
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def training_info(adapter: Path) -> dict[str, Any]:
    """`medr1_train.json` from the adapter folder (what `medr1-train sft` records: dataset ref, recipe), or {}."""
    path = adapter / "medr1_train.json"
    return read_json(path, "the training record") if path.is_file() else {}


def read_eval_results(path: Path | None) -> dict[str, dict[str, float]]:
    """`{task: {metric: value}}` from an lm-eval results JSON (the `results` section), or {} when there is none."""
    if path is None or not path.is_file():
        return {}
    data = read_json(path, "the eval results")
    results = data.get("results", data)
    table: dict[str, dict[str, float]] = {}
    if isinstance(results, dict):
        for task, metrics in results.items():
            if isinstance(metrics, dict):
                nums = {
                    k: float(v)
                    for k, v in metrics.items()
                    if isinstance(v, int | float) and not isinstance(v, bool) and "stderr" not in k
                }
                if nums:
                    table[str(task)] = nums
    return table


def _libraries(kinds: list[str]) -> list[str]:
    return [library for library in ("torchao", "gguf") if any(KINDS[k] == library for k in kinds)]


def _require(kinds: list[str]) -> None:
    """A one-line error when a library or the GPU that one of `kinds` needs is missing."""
    for library in _libraries(kinds):
        try:
            importlib.import_module(library)
        except ImportError as e:
            raise Medr1Error(
                f"{library} is not installed; install the deploy extra: pip install 'medr1[deploy]'"
            ) from e
    import torch

    if "int4" in kinds and not torch.cuda.is_available():
        raise Medr1Error(
            "--quantize int4 needs a CUDA GPU (torchao's int4 weight-only kernels have no CPU path in this version); "
            "on CPU use int8, or gguf-q4_0 with llama.cpp"
        )


def _versions(kinds: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"medr1": __version__}
    for pkg in ["torch", "transformers", "peft", *_libraries(kinds)]:
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _dtype_of(config: Any) -> Any:
    """The torch dtype the base's config declares (float32 when it declares none)."""
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


@dataclass
class _Plan:
    """What `run` settled before loading any weights: what to write, where, and what the cards quote."""

    adapter: Path
    base: str
    kinds: list[str]
    out: Path
    name: str
    merge: bool
    no_check: bool
    dtype: Any
    evals: dict[str, dict[str, float]]
    info: dict[str, Any]
    command: str
    versions: dict[str, str]
    adapter_sha256: str
    previous: dict[str, Any] | None  # export_report.json of earlier calls into DIR

    @property
    def dtype_name(self) -> str:
        """The dtype as Transformers spells it (`float32`, `bfloat16`)."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def noise(self) -> float:
        """What low-precision rounding adds to every bound."""
        return 0.0 if self.dtype_name == "float32" else LOW_PRECISION_NOISE


def _tokenizer_source(adapter: Path, base: str) -> Path | str:
    return adapter if (adapter / "tokenizer_config.json").is_file() else base


def _plan(args: argparse.Namespace) -> _Plan:
    """Check the arguments, the adapter against its base, the libraries, the GGUF architecture and tokenizer, and
    what DIR already holds: every error comes before any weight is loaded or any file written."""
    kinds = parse_kinds(args.quantize)
    if not args.merge and not kinds:
        raise Medr1Error("nothing to export: pass --merge, --quantize KIND, or both")
    adapter = Path(args.adapter)
    adapter_config = read_adapter(adapter)
    base = args.base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise Medr1Error(f"{adapter}/adapter_config.json names no base model; pass --base MODEL")
    _require(kinds)
    config = check_compatible(adapter, str(base))
    if any(KINDS[k] == "gguf" for k in kinds):
        from transformers import AutoTokenizer

        check_gguf_support(config, AutoTokenizer.from_pretrained(_tokenizer_source(adapter, str(base))))
    out = Path(args.out)
    if args.eval_results is not None and not args.eval_results.is_file():
        raise Medr1Error(f"{args.eval_results}: eval results file not found")
    evals = read_eval_results(args.eval_results or (adapter / "eval_results.json"))
    name = args.name or out.resolve().name
    check_targets(out, (["merged"] if args.merge else []) + kinds, name, args.overwrite)
    sha = adapter_sha256(adapter)
    command = "medr1-train export " + " ".join(
        [str(adapter), f"--base {base}", f"--out {out}"]
        + (["--merge"] if args.merge else [])
        + [f"--quantize {k}" for k in kinds]
    )
    return _Plan(
        adapter=adapter,
        base=str(base),
        kinds=kinds,
        out=out,
        name=name,
        merge=args.merge,
        no_check=args.no_check,
        dtype=_dtype_of(config),
        evals=evals,
        info=training_info(adapter),
        command=command,
        versions=_versions(kinds),
        adapter_sha256=sha,
        previous=previous_report(out, sha, str(base)),
    )


def _load_merged(plan: _Plan) -> tuple[Any, Any, Any, Any]:
    """(tokenizer, merged model, logits of base + adapter, logits of the merged model), all on the CPU."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    _log(f"loading base {plan.base} ({plan.dtype_name}) and adapter {plan.adapter}")
    tokenizer = AutoTokenizer.from_pretrained(_tokenizer_source(plan.adapter, plan.base))
    if not tokenizer.chat_template:
        _log("warning: the tokenizer has no chat template; the exported model will not format chats by itself")
    model = AutoModelForCausalLM.from_pretrained(plan.base, dtype=plan.dtype, device_map="cpu")
    try:
        peft_model = PeftModel.from_pretrained(model, plan.adapter)
    except (RuntimeError, ValueError, KeyError) as e:
        raise Medr1Error(
            f"{plan.adapter}: cannot apply the adapter to base {plan.base}: {str(e).splitlines()[0]}"
        ) from e
    inputs = probe_inputs(tokenizer)
    unmerged_logits = logits_of(peft_model, inputs)
    merged = peft_model.merge_and_unload()
    merged_logits = logits_of(merged, inputs)
    _log(f"merged in {time.perf_counter() - t0:.1f}s")
    return tokenizer, merged, unmerged_logits, merged_logits


def _merged_variant(merged_dir: Path, unmerged_logits: Any, plan: _Plan) -> Variant:
    """DIR/merged as a variant; reloaded, it is checked against base + adapter (unmerged), the claim of a merge."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    v = Variant("merged", str(merged_dir), weights_bytes(merged_dir))
    if not plan.no_check:
        reloaded = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto", device_map="cpu")
        reloaded_tok = AutoTokenizer.from_pretrained(merged_dir)
        v.check = check_variant(
            reloaded, reloaded_tok, unmerged_logits, "merged", "AutoModelForCausalLM", noise=plan.noise
        )
    return v


def _export(plan: _Plan, stage: Path) -> tuple[list[Variant], tuple[float, float, float]]:
    """Merge, write and check every variant in `stage`; also the in-memory merge check (merged against base +
    adapter). The merged model is saved to `stage/merged` in any case: the torchao variants are made from it."""
    tokenizer, merged, unmerged_logits, merged_logits = _load_merged(plan)
    variants: list[Variant] = []
    merged_dir = stage / "merged"
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    if plan.merge:
        variants.append(_merged_variant(merged_dir, unmerged_logits, plan))

    # GGUF is written from the merged weights in memory; torchao variants reload them from disk, so the merged
    # model is freed first (a 7B student in bf16 is 15 GB of RAM).
    written: dict[str, Variant] = {}
    for kind in sorted(plan.kinds, key=lambda k: KINDS[k] != "gguf"):
        if KINDS[kind] != "gguf" and merged is not None:
            merged = None
            gc.collect()
        t = time.perf_counter()
        if KINDS[kind] == "gguf":
            written[kind] = gguf_variant(
                kind, merged, tokenizer, stage / "gguf", plan.name, merged_logits, plan.no_check, plan.noise
            )
        else:
            written[kind] = torchao_variant(
                kind, merged_dir, stage / kind, plan.dtype, merged_logits, plan.no_check, tokenizer, plan.noise
            )
        _log(f"{kind} written in {time.perf_counter() - t:.1f}s")
    variants += [written[k] for k in plan.kinds]
    return variants, compare(unmerged_logits, merged_logits)


def _write_cards(plan: _Plan, stage: Path, variants: list[Variant], kept: list[Variant]) -> None:
    """One README.md per output folder of this call, in `stage`; `gguf/`'s lists the GGUF files kept from earlier
    calls too."""
    folders: dict[str, list[Variant]] = {}
    for v in variants:
        folders.setdefault(folder_of(v.kind), []).append(v)
    commands = [*(plan.previous or {}).get("commands", []), plan.command]
    for folder, vs in folders.items():
        shown = [v for v in kept if folder_of(v.kind) == folder] + vs if folder == "gguf" else vs
        card = variant_card(
            name=plan.name,
            folder=folder,
            base=plan.base,
            dtype=plan.dtype_name,
            info=plan.info,
            evals=plan.evals,
            variants=shown,
            command="\n".join(commands) if folder == "gguf" else plan.command,
            versions=plan.versions,
            generate_tokens=GENERATE_TOKENS,
        )
        (stage / folder / "README.md").write_text(card, encoding="utf-8")


def _report(plan: _Plan, merge_check: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "adapter": str(plan.adapter),
        "adapter_sha256": plan.adapter_sha256,
        "base": plan.base,
        "dtype": plan.dtype_name,
        "merge_check_in_memory": dict(zip(("rel_error", "max_abs_error", "top1_agreement"), merge_check, strict=True)),
        "versions": plan.versions,
        "command": plan.command,
    }


def _print_summary(variants: list[Variant]) -> None:
    """The table of variants on stdout; warnings on stderr for those out of bounds or with another tokenization."""
    print(f"{'variant':<10} {'size MB':>9} {'rel.err':>9} {'bound':>7} {'top1':>6}  path")
    for v in variants:
        c = v.check
        cols = f"{c.rel_error:>9.2e} {c.bound:>7g} {c.top1_agreement:>6.3f}" if c else f"{'-':>9} {'-':>7} {'-':>6}"
        print(f"{v.kind:<10} {v.bytes / 1e6:>9.2f} {cols}  {v.path}")
        if c is not None and not c.within_bound:
            _log(f"warning: {v.kind} differs from the merged model by {c.rel_error:.3g} > its bound {c.bound:g}")
        if c is not None and not c.tokenizer_matches:
            _log(f"warning: {v.kind}'s own tokenizer encodes the probe prompt differently from the model's tokenizer")


def run(args: argparse.Namespace) -> int:
    """Merge, write the asked-for variants, load each back and check it; print a summary table."""
    plan = _plan(args)
    kept = kept_variants(plan.previous, set(plan.kinds) | ({"merged"} if plan.merge else set()))
    with staging(plan.out) as stage:
        variants, merge_check = _export(plan, stage)
        _write_cards(plan, stage, variants, kept)
        commit(stage, plan.out, variants, plan.name)
    write_report(plan.out, _report(plan, merge_check), kept + variants, plan.previous)
    _print_summary(variants)
    return 0
