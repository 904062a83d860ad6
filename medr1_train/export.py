"""`medr1-train export`: merge a LoRA adapter into its base and write quantized variants that load and generate.

Layout of `--out DIR` (each folder is a self-contained Hub-style repo with its own model card):

    DIR/merged/     safetensors in the base's dtype, tokenizer + chat template, generation config (`--merge`)
    DIR/int8/       torchao int8 weight-only through Transformers' `TorchAoConfig` (CPU and GPU)
    DIR/int4/       torchao int4 weight-only (tinygemm kernels: CUDA only)
    DIR/gguf/       `NAME-F16.gguf`, `NAME-Q8_0.gguf`, `NAME-Q4_0.gguf` for llama.cpp / Ollama (Qwen2 models)
    DIR/export_report.json

Every variant written is loaded back with its standard loader, generates, and its logits on a fixed chat prompt
are compared with the merged model's; the numbers go into its card and the report.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error, __version__
from medr1_data.prompts import SYSTEM_PROMPT

# kind -> (library, what it is, where it runs)
KINDS: dict[str, tuple[str, str, str]] = {
    "int8": ("torchao", "int8 weight-only, per-channel scales (Int8WeightOnlyConfig)", "CPU and CUDA"),
    "int4": ("torchao", "int4 weight-only, group-wise scales (Int4WeightOnlyConfig, tinygemm)", "CUDA only"),
    "gguf-f16": ("gguf", "GGUF, F16 weights (norms and biases F32)", "llama.cpp / Ollama, CPU and GPU"),
    "gguf-q8_0": ("gguf", "GGUF, Q8_0 weights (blocks of 32, one f16 scale)", "llama.cpp / Ollama, CPU and GPU"),
    "gguf-q4_0": (
        "gguf",
        "GGUF, Q4_0 weights (blocks of 32, one f16 scale; token embeddings Q8_0)",
        "llama.cpp / Ollama, CPU and GPU",
    ),
}

# Documented bounds on the logits of each variant against the merged model, on the probe prompt: relative error
# ||Δ||₂ / ||merged||₂ over all positions and the whole vocabulary. Measured on the tiny random-weight test model
# (tests/test_export.py enforces them): merged 5.6e-7, int8 0.017, gguf-f16 0.0010, gguf-q8_0 0.021, gguf-q4_0 0.20.
# In bf16 (tiny model): merged 0.011, int8 0.018, gguf-f16 0, gguf-q8_0 0.029, gguf-q4_0 0.20 (+ LOW_PRECISION_NOISE).
# Export warns when a model exceeds its bound. int4 (CUDA only) has not been measured here; its bound is Q4_0's.
REL_ERROR_BOUND: dict[str, float] = {
    "merged": 1e-5,  # against base + adapter (unmerged)
    "int8": 0.05,
    "int4": 0.3,
    "gguf-f16": 0.005,
    "gguf-q8_0": 0.05,
    "gguf-q4_0": 0.3,
}


# Added to every bound when the base is bf16/fp16: the merged reference then runs in that precision, and any tiny
# change of the weights (the merge's own rounding of W + BA, f16 subnormals) moves its logits by about 1%
# (merged vs base + adapter: 0.011 on the tiny model in bf16, 0.016 on an 8-layer 1024-wide random one).
LOW_PRECISION_NOISE = 0.03

PROBE_QUESTION = (
    "A 45-year-old man presents with chest pain radiating to the left arm and diaphoresis. "
    "Which of the following is the most likely diagnosis?\n"
    "A. Myocardial infarction\nB. Pneumothorax\nC. Gastroesophageal reflux\nD. Costochondritis"
)
GENERATE_TOKENS = 16


@dataclass
class Check:
    """How a written variant compares with the merged model after loading it back."""

    loader: str
    rel_error: float
    max_abs_error: float
    top1_agreement: float
    generated_tokens: int
    generated_text: str
    bound: float
    tokenizer_matches: bool = True

    @property
    def within_bound(self) -> bool:
        """Whether the relative logit error is within the documented bound."""
        return self.rel_error <= self.bound


@dataclass
class Variant:
    """One exported artefact: its kind, where it lies, its size and its check."""

    kind: str
    path: str
    bytes: int
    check: Check | None = None
    files: list[str] = field(default_factory=list)


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


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise Medr1Error(f"{path}: cannot read {what}: {e}") from e


def read_adapter(adapter: Path) -> dict[str, Any]:
    """The adapter's `adapter_config.json`, after checking the folder is a LoRA adapter with weights."""
    if not adapter.exists():
        raise Medr1Error(f"{adapter}: adapter folder not found")
    if not (adapter / "adapter_config.json").is_file():
        raise Medr1Error(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
    config = _read_json(adapter / "adapter_config.json", "the adapter config")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise Medr1Error(f"{adapter}/adapter_config.json: peft_type is {config.get('peft_type')!r}; only LoRA merges")
    if not any((adapter / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise Medr1Error(f"{adapter}: no adapter weights (adapter_model.safetensors)")
    return config


def _adapter_shapes(adapter: Path) -> dict[str, tuple[int, ...]]:
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        with safe_open(weights, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    import torch

    state = torch.load(adapter / "adapter_model.bin", map_location="meta", weights_only=True)
    return {k: tuple(v.shape) for k, v in state.items()}


def check_compatible(adapter: Path, base: str) -> Any:
    """Load the base's config, build it on the meta device and check every adapter tensor fits a base module."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise Medr1Error(f"base model {base}: cannot read its config ({str(e).splitlines()[0]})") from e
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    hint = "was the adapter trained on another base?"
    for key, shape in _adapter_shapes(adapter).items():
        name = key.removeprefix("base_model.model.")
        for marker, dim in ((".lora_A", 1), (".lora_B", 0), (".lora_embedding_A", 1), (".lora_embedding_B", 0)):
            if marker in name:
                module_name = name.split(marker)[0]
                module = modules.get(module_name)
                if module is None:
                    raise Medr1Error(
                        f"{adapter}: adapter targets module '{module_name}', which base {base} does not have; {hint}"
                    )
                if isinstance(module, torch.nn.Embedding):
                    want = module.num_embeddings if dim == 1 else module.embedding_dim
                else:
                    want = getattr(module, "in_features" if dim == 1 else "out_features", None)
                if want is not None and shape[dim] != want:
                    side = "input" if dim == 1 else "output"
                    raise Medr1Error(
                        f"{adapter}: adapter does not match base {base}: '{module_name}' has {side} size {want} in "
                        f"the base but {shape[dim]} in the adapter ({key}); {hint}"
                    )
                break
        else:  # modules_to_save: full tensors that replace base parameters
            target = params.get(name.replace(".modules_to_save.default", ""))
            if target is None:
                raise Medr1Error(f"{adapter}: adapter tensor '{key}' has no counterpart in base {base}; {hint}")
            if tuple(target.shape) != shape:
                raise Medr1Error(
                    f"{adapter}: adapter does not match base {base}: '{name}' is {tuple(target.shape)} in the base "
                    f"but {shape} in the adapter; {hint}"
                )
    return config


def _weights_bytes(path: Path) -> int:
    """Bytes of the weight files only (safetensors or GGUF), what the size claims are about."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.suffix in {".safetensors", ".gguf", ".bin"})


def _prepare(folder: Path, overwrite: bool) -> Path:
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise Medr1Error(f"{folder} already exists and is not empty; pass --overwrite to replace it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def probe_inputs(tokenizer: Any) -> dict[str, Any]:
    """The fixed chat prompt (system prompt + one MCQ) every variant is checked on."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PROBE_QUESTION}]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{SYSTEM_PROMPT}\n\n{PROBE_QUESTION}\n"
    return dict(tokenizer(text, return_tensors="pt", add_special_tokens=False))


def logits_of(model: Any, inputs: dict[str, Any]) -> Any:
    """Float32 logits of `model` on `inputs`, on the CPU."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in inputs.items()}).logits
    return out.float().cpu()


def compare(ref: Any, got: Any) -> tuple[float, float, float]:
    """(relative L2 error, max absolute error, top-1 agreement) of `got` logits against `ref`."""
    diff = got - ref
    rel = float(diff.norm() / ref.norm().clamp_min(1e-12))
    top1 = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    return rel, float(diff.abs().max()), top1


def check_variant(
    model: Any, tokenizer: Any, ref: Any, kind: str, loader: str, own_tokenizer: Any = None, noise: float = 0.0
) -> Check:
    """Logits against the merged model's and a short greedy generation of a loaded variant.

    `own_tokenizer` is the tokenizer the variant carries when it is not `tokenizer` (GGUF): it must encode the
    probe prompt to the same ids.
    """
    import torch

    inputs = probe_inputs(tokenizer)
    matches = True
    if own_tokenizer is not None:
        matches = bool(probe_inputs(own_tokenizer)["input_ids"].tolist() == inputs["input_ids"].tolist())
    rel, max_abs, top1 = compare(ref, logits_of(model, inputs))
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model.generate(
            **{k: v.to(device) for k, v in inputs.items()},
            max_new_tokens=GENERATE_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    new = out[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return Check(loader, rel, max_abs, top1, int(new.numel()), text[:200], REL_ERROR_BOUND[kind] + noise, matches)


# --------------------------------------------------------------------------------------------------- model card


def training_info(adapter: Path) -> dict[str, Any]:
    """`medr1_train.json` from the adapter folder (what `medr1-train sft` records: dataset ref, recipe), or {}."""
    path = adapter / "medr1_train.json"
    return _read_json(path, "the training record") if path.is_file() else {}


def read_eval_results(path: Path | None) -> dict[str, dict[str, float]]:
    """`{task: {metric: value}}` from an lm-eval results JSON (the `results` section), or {} when there is none."""
    if path is None or not path.is_file():
        return {}
    data = _read_json(path, "the eval results")
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


PLACEHOLDER = "PATH_OR_REPO_OF_THIS_MODEL"
LOAD_SNIPPETS = {
    "merged": (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tok = AutoTokenizer.from_pretrained("{path}")\n'
        'model = AutoModelForCausalLM.from_pretrained("{path}", dtype="auto", device_map="auto")\n```\n\n'
        "Serve it with vLLM: `vllm serve {path}` (OpenAI-compatible API on port 8000). Evaluate it on the MedR1 "
        "tasks: `medr1-eval --model hf --model_args pretrained={path} --tasks medr1`.\n"
    ),
    "int8": (
        "Needs `torchao` (`pip install 'medr1[deploy]'`); the quantization config is stored in `config.json`.\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tok = AutoTokenizer.from_pretrained("{path}")\n'
        'model = AutoModelForCausalLM.from_pretrained("{path}", device_map="cpu")  # or "cuda"\n```\n'
    ),
    "int4": (
        "Needs `torchao` and a CUDA GPU (tinygemm int4 kernels).\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tok = AutoTokenizer.from_pretrained("{path}")\n'
        'model = AutoModelForCausalLM.from_pretrained("{path}", device_map="cuda")\n```\n'
    ),
    "gguf": (
        "llama.cpp: `llama-cli -m {path}/{file} -cnv` or `llama-server -m {path}/{file}`; "
        "Ollama: a `Modelfile` with `FROM ./{file}`.\n\n"
        "Transformers (dequantizes to float32 on load):\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tok = AutoTokenizer.from_pretrained("{path}", gguf_file="{file}")\n'
        'model = AutoModelForCausalLM.from_pretrained("{path}", gguf_file="{file}")\n```\n'
    ),
}


def _check_table(variants: list[Variant]) -> str:
    lines = [
        "Each file was loaded back with its standard loader; its logits on a fixed chat prompt (system prompt and one "
        "MCQ) were compared with the merged model's (the merged model's with base + adapter, unmerged): relative "
        f"error ‖Δ‖₂/‖ref‖₂ against the documented bound, max |Δ|, agreement of the top token, and {GENERATE_TOKENS} "
        "greedy tokens were generated.",
        "",
        "| file | size | loader | rel. error | bound | max abs | top-1 agree | generated |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        c = v.check
        if c is not None:
            lines.append(
                f"| {Path(v.path).name} | {v.bytes / 1e6:.1f} MB | {c.loader} | {c.rel_error:.2e} | {c.bound:g} | "
                f"{c.max_abs_error:.3g} | {c.top1_agreement:.3f} | {c.generated_tokens} tokens |"
            )
    return "\n".join(lines)


def variant_card(
    *,
    name: str,
    folder: str,
    base: str,
    dtype: str,
    info: dict[str, Any],
    evals: dict[str, dict[str, float]],
    variants: list[Variant],
    command: str,
    versions: dict[str, str],
) -> str:
    """The README.md of one exported folder, through `medr1_train.card.model_card` (the training card)."""
    from medr1_train.card import model_card

    recipe = info.get("recipe")
    if folder == "merged":
        made = "The adapter was merged into the base with peft's `merge_and_unload()` and saved with Transformers."
    elif folder == "gguf":
        made = (
            "The merged model was written to GGUF with the `gguf` package (llama.cpp's own Python writer and "
            "quantizers): " + "; ".join(f"`{Path(v.path).name}`: {KINDS[v.kind][1]}" for v in variants) + "."
        )
    else:
        made = (
            f"The merged model was quantized with torchao through Transformers' `TorchAoConfig`: {KINDS[folder][1]}; "
            f"runs on {KINDS[folder][2]}. Embeddings and norms stay in `{dtype}`."
        )
    sections = {
        "How it was made": f"{made}\n\n```bash\n{command}\n```\n\n"
        + "Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
    }
    if evals:
        rows = [f"| {t} | {m} | {v:.4f} |" for t, ms in sorted(evals.items()) for m, v in sorted(ms.items())]
        sections["Evaluation"] = (
            "Results of the adapter before export (lm-eval); what quantization costs is measured by "
            "`benchmarks/deploy.py`.\n\n| task | metric | value |\n|---|---|---:|\n" + "\n".join(rows)
        )
    if any(v.check for v in variants):
        sections["Export check"] = _check_table(variants)
    if folder == "gguf":
        usage = "\n".join(LOAD_SNIPPETS["gguf"].format(path=PLACEHOLDER, file=Path(v.path).name) for v in variants[:1])
        if len(variants) > 1:
            usage += "\nThe other files load the same way: " + ", ".join(f"`{Path(v.path).name}`" for v in variants[1:])
    else:
        usage = LOAD_SNIPPETS[folder].format(path=PLACEHOLDER)
    title = f"{name} (merged)" if folder == "merged" else f"{name} ({folder})"
    dataset_ref = info.get("dataset") or {"dataset": "not recorded (the adapter folder has no medr1_train.json)"}
    text = model_card(
        base_model=base,
        dataset_ref=dataset_ref,
        recipe=recipe,
        recipe_name=(recipe or {}).get("name") or info.get("recipe_file"),
        recipe_sha256=info.get("recipe_sha256"),
        stats=info.get("data_stats"),
        kind="merged",
        title=title,
        usage=usage,
        extra_sections=sections,
        tags=["merged"] if folder == "merged" else (["gguf"] if folder == "gguf" else [folder, "torchao"]),
        library_name="gguf" if folder == "gguf" else None,
    )
    return text


# ------------------------------------------------------------------------------------------------------- GGUF


def gguf_pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (`qwen2`, `gpt-2`), read from its tokenizer.json."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    regexes = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if PRETOKENIZE_REGEX in regexes:
        return "qwen2"
    if not regexes and any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return "gpt-2"
    raise Medr1Error(
        "GGUF export: the tokenizer's pre-tokenizer is neither Qwen2's nor GPT-2's byte-level split; "
        "use llama.cpp's convert_hf_to_gguf.py on DIR/merged instead"
    )


def write_gguf(model: Any, tokenizer: Any, path: Path, kind: str, name: str) -> None:
    """Write a Qwen2 model and its byte-level BPE tokenizer to one GGUF file with the `gguf` package."""
    import gguf
    import numpy as np
    import torch

    config = model.config
    if config.model_type != "qwen2":
        raise Medr1Error(
            f"GGUF export supports Qwen2-architecture students (this base is '{config.model_type}'); "
            "use llama.cpp's convert_hf_to_gguf.py on DIR/merged instead"
        )
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise Medr1Error(f"GGUF export: rope scaling '{rope.get('rope_type')}' is not supported; use llama.cpp")
    qtype, ftype = {
        "gguf-f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "gguf-q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
        "gguf-q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    }[kind]
    pre = gguf_pre_tokenizer(tokenizer)
    n_layers = config.num_hidden_layers
    arch = gguf.MODEL_ARCH.QWEN2
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # Tokenizer, as llama.cpp's convert_hf_to_gguf.py writes a byte-level BPE one: every id up to the embedding
    # rows, added tokens marked control (special) or user-defined, unused padding rows.
    vocab_rows = config.vocab_size
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_rows):
        if i >= len(tokenizer):
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(tokenizer.convert_ids_to_tokens(i))
            types.append(gguf.TokenType.NORMAL)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"].get("merges", [])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for setter, token_id in (
        (writer.add_bos_token_id, config.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if isinstance(token_id, int):
            setter(token_id)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(arch, n_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise Medr1Error(f"GGUF export: no GGUF name for tensor '{hf_name}'")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        want = qtype
        if kind == "gguf-q4_0" and new == "token_embd.weight":
            want = gguf.GGMLQuantizationType.Q8_0  # as llama-quantize keeps embeddings at higher precision
        if data.ndim == 1 or (want != gguf.GGMLQuantizationType.F16 and data.shape[-1] % 32):
            writer.add_tensor(new, data.astype(np.float32))  # norms, biases, rows not divisible into blocks
        elif want == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(new, data.astype(np.float16))
        else:
            writer.add_tensor(new, gguf.quants.quantize(data, want), raw_dtype=want)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --------------------------------------------------------------------------------------------------------- run


def _versions(kinds: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"medr1": __version__}
    wanted = ["torch", "transformers", "peft"]
    if any(k in ("int8", "int4") for k in kinds):
        wanted.append("torchao")
    if any(k.startswith("gguf") for k in kinds):
        wanted.append("gguf")
    for pkg in wanted:
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _log(message: str) -> None:
    print(f"[export] {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Merge, write the asked-for variants, load each back and check it; print a summary table."""
    kinds = parse_kinds(args.quantize)
    if not args.merge and not kinds:
        raise Medr1Error("nothing to export: pass --merge, --quantize KIND, or both")
    adapter = Path(args.adapter)
    adapter_config = read_adapter(adapter)
    base = args.base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise Medr1Error(f"{adapter}/adapter_config.json names no base model; pass --base MODEL")
    if any(k in ("int8", "int4") for k in kinds):
        try:
            import torchao  # noqa: F401
        except ImportError as e:
            raise Medr1Error("torchao is not installed; install the deploy extra: pip install 'medr1[deploy]'") from e
    if any(k.startswith("gguf") for k in kinds):
        try:
            import gguf  # noqa: F401
        except ImportError as e:
            raise Medr1Error("gguf is not installed; install the deploy extra: pip install 'medr1[deploy]'") from e

    import torch

    if "int4" in kinds and not torch.cuda.is_available():
        raise Medr1Error(
            "--quantize int4 needs a CUDA GPU (torchao's int4 weight-only kernels have no CPU path in this version); "
            "on CPU use int8, or gguf-q4_0 with llama.cpp"
        )
    config = check_compatible(adapter, str(base))
    out = Path(args.out)
    name = args.name or out.resolve().name
    evals_path = args.eval_results or (adapter / "eval_results.json")
    if args.eval_results is not None and not args.eval_results.is_file():
        raise Medr1Error(f"{args.eval_results}: eval results file not found")
    evals = read_eval_results(evals_path)
    info = training_info(adapter)
    targets = (["merged"] if args.merge else []) + [("gguf" if k.startswith("gguf") else k) for k in kinds]
    for folder in dict.fromkeys(targets):
        _prepare(out / folder, args.overwrite)
    command = "medr1-train export " + " ".join(
        [str(adapter), f"--base {base}", f"--out {out}"]
        + (["--merge"] if args.merge else [])
        + [f"--quantize {k}" for k in kinds]
    )
    versions = _versions(kinds)

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    dtype_name = str(dtype).removeprefix("torch.")
    noise = 0.0 if dtype == torch.float32 else LOW_PRECISION_NOISE
    t0 = time.perf_counter()
    _log(f"loading base {base} ({dtype_name}) and adapter {adapter}")
    tok_source = adapter if (adapter / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tok_source)
    if not tokenizer.chat_template:
        _log("warning: the tokenizer has no chat template; the exported model will not format chats by itself")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, device_map="cpu")
    try:
        peft_model = PeftModel.from_pretrained(model, adapter)
    except (RuntimeError, ValueError, KeyError) as e:
        raise Medr1Error(f"{adapter}: cannot apply the adapter to base {base}: {str(e).splitlines()[0]}") from e
    inputs = probe_inputs(tokenizer)
    unmerged_logits = logits_of(peft_model, inputs)
    merged = peft_model.merge_and_unload()
    merged_logits = logits_of(merged, inputs)
    _log(f"merged in {time.perf_counter() - t0:.1f}s")

    variants: list[Variant] = []
    with tempfile.TemporaryDirectory(prefix="medr1-merged-") as tmp:
        merged_dir = out / "merged" if args.merge else Path(tmp)
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        if args.merge:
            v = Variant("merged", str(merged_dir), _weights_bytes(merged_dir))
            if not args.no_check:
                reloaded = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto", device_map="cpu")
                reloaded_tok = AutoTokenizer.from_pretrained(merged_dir)
                # The reloaded merged model is checked against base + adapter (unmerged), the claim of a merge.
                v.check = check_variant(
                    reloaded, reloaded_tok, unmerged_logits, "merged", "AutoModelForCausalLM", noise=noise
                )
                del reloaded
            variants.append(v)

        # GGUF is written from the merged weights in memory; torchao variants reload them from disk, so the merged
        # model is freed first (a 7B student in bf16 is 15 GB of RAM).
        written: dict[str, Variant] = {}
        for kind in sorted(kinds, key=lambda k: not k.startswith("gguf")):
            if not kind.startswith("gguf") and merged is not None:
                merged = peft_model = model = None
                gc.collect()
            t = time.perf_counter()
            if kind.startswith("gguf"):
                written[kind] = _gguf_variant(kind, merged, tokenizer, out / "gguf", name, merged_logits, args, noise)
            else:
                written[kind] = _torchao_variant(
                    kind, merged_dir, out / kind, dtype, merged_logits, args.no_check, tokenizer, noise
                )
            _log(f"{kind} written in {time.perf_counter() - t:.1f}s")
        variants += [written[k] for k in kinds]

    merged = peft_model = model = None
    folders: dict[str, list[Variant]] = {}
    for v in variants:
        folders.setdefault("gguf" if v.kind.startswith("gguf") else v.kind, []).append(v)
    for folder, vs in folders.items():
        card = variant_card(
            name=name,
            folder=folder,
            base=str(base),
            dtype=dtype_name,
            info=info,
            evals=evals,
            variants=vs,
            command=command,
            versions=versions,
        )
        (out / folder / "README.md").write_text(card, encoding="utf-8")
        for v in vs:
            v.files = sorted(str(p.relative_to(out)) for p in (out / folder).rglob("*") if p.is_file())
    report = {
        "adapter": str(adapter),
        "base": str(base),
        "dtype": dtype_name,
        "merge_check_in_memory": dict(
            zip(("rel_error", "max_abs_error", "top1_agreement"), compare(unmerged_logits, merged_logits), strict=True)
        ),
        "variants": [asdict(v) for v in variants],
        "versions": versions,
    }
    (out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"{'variant':<10} {'size MB':>9} {'rel.err':>9} {'bound':>7} {'top1':>6}  path")
    for v in variants:
        c = v.check
        cols = f"{c.rel_error:>9.2e} {c.bound:>7g} {c.top1_agreement:>6.3f}" if c else f"{'-':>9} {'-':>7} {'-':>6}"
        print(f"{v.kind:<10} {v.bytes / 1e6:>9.2f} {cols}  {v.path}")
        if c is not None and not c.within_bound:
            _log(f"warning: {v.kind} differs from the merged model by {c.rel_error:.3g} > its bound {c.bound:g}")
        if c is not None and not c.tokenizer_matches:
            _log(f"warning: {v.kind}'s own tokenizer encodes the probe prompt differently from the model's tokenizer")
    return 0


def _torchao_variant(
    kind: str, merged_dir: Path, folder: Path, dtype: Any, ref: Any, no_check: bool, tokenizer: Any, noise: float
) -> Variant:
    import torch
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

    if kind == "int8":
        quant, device, load_dtype = Int8WeightOnlyConfig(), "cpu", dtype
    else:
        config = json.loads((merged_dir / "config.json").read_text())
        widths = {config["hidden_size"], config["intermediate_size"]}
        group = next((g for g in (128, 64, 32) if all(w % g == 0 for w in widths)), 32)
        quant = Int4WeightOnlyConfig(group_size=group, int4_packing_format="tile_packed_to_4d")
        device, load_dtype = "cuda", torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(
        merged_dir, dtype=load_dtype, device_map=device, quantization_config=TorchAoConfig(quant)
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    v = Variant(kind, str(folder), _weights_bytes(folder))
    if not no_check:
        reloaded = AutoModelForCausalLM.from_pretrained(folder, device_map=device)
        v.check = check_variant(
            reloaded, AutoTokenizer.from_pretrained(folder), ref, kind, "AutoModelForCausalLM (torchao)", noise=noise
        )
    return v


def _gguf_variant(
    kind: str, merged: Any, tokenizer: Any, folder: Path, name: str, ref: Any, args: argparse.Namespace, noise: float
) -> Variant:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = folder / f"{name}-{kind.removeprefix('gguf-').upper()}.gguf"
    write_gguf(merged, tokenizer, file, kind, name)
    v = Variant(kind, str(file), file.stat().st_size)
    if not args.no_check:
        # Dequantized into the base's dtype, as the merged reference runs.
        reloaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file.name, dtype=merged.dtype)
        gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=file.name)
        v.check = check_variant(reloaded, tokenizer, ref, kind, "AutoModelForCausalLM (gguf_file=)", gguf_tok, noise)
    return v


if __name__ == "__main__":
    from medr1_train.cli import main

    sys.exit(main(["export", *sys.argv[1:]]))
