"""Checks of an export: the adapter fits its base, and each variant written keeps the merged model's logits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_data.prompts import SYSTEM_PROMPT

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


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path`; an unreadable file is a one-line error naming `what` it should hold."""
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
    config = read_json(adapter / "adapter_config.json", "the adapter config")
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


def weights_bytes(path: Path) -> int:
    """Bytes of the weight files only (safetensors or GGUF), what the size claims are about."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.suffix in {".safetensors", ".gguf", ".bin"})


def probe_inputs(tokenizer: Any) -> dict[str, Any]:
    """The fixed chat prompt (system prompt + one MCQ) every variant is checked on."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PROBE_QUESTION}]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = f"{SYSTEM_PROMPT}\n\n{PROBE_QUESTION}\n"
    return dict(tokenizer(text, return_tensors="pt", add_special_tokens=False))


def _on_device(model: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in inputs.items()}


def logits_of(model: Any, inputs: dict[str, Any]) -> Any:
    """Float32 logits of `model` on `inputs`, on the CPU."""
    import torch

    with torch.inference_mode():
        out = model(**_on_device(model, inputs)).logits
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
    """Logits against `ref` and a greedy generation of a loaded variant; `own_tokenizer` (GGUF's) must encode alike."""
    import torch

    inputs = probe_inputs(tokenizer)
    matches = True
    if own_tokenizer is not None:
        matches = bool(probe_inputs(own_tokenizer)["input_ids"].tolist() == inputs["input_ids"].tolist())
    rel, max_abs, top1 = compare(ref, logits_of(model, inputs))
    with torch.inference_mode():
        out = model.generate(
            **_on_device(model, inputs),
            max_new_tokens=GENERATE_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    new = out[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return Check(loader, rel, max_abs, top1, int(new.numel()), text[:200], REL_ERROR_BOUND[kind] + noise, matches)
