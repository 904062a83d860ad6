"""The GGUF writer: a merged Qwen2, Qwen3 or Llama model and its byte-level BPE tokenizer as one llama.cpp file.

What llama.cpp's `convert_hf_to_gguf.py` does for these architectures, with the `gguf` package: the same metadata,
tensor names and tokenizer fields; Llama's q/k projections permuted to llama.cpp's rotary layout, and Llama-3.1's
rope scaling written as the `rope_freqs` tensor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_train.export.checks import Variant, check_variant

# Hugging Face model_type -> gguf.MODEL_ARCH member name; the architectures written and tested here.
ARCHITECTURES = {"qwen2": "QWEN2", "qwen3": "QWEN3", "llama": "LLAMA"}
# Pre-tokenizer splits llama.cpp knows by these names (the regexes are those Transformers reads GGUF files with).
PRE_TOKENIZERS = ("qwen2", "llama-bpe")
FALLBACK = "use llama.cpp's convert_hf_to_gguf.py on DIR/merged instead"


def gguf_pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (`qwen2`, `llama-bpe`, `gpt-2`), from its tokenizer.json."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    regexes = [p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"]
    if len(regexes) == 1:
        for name in PRE_TOKENIZERS:
            if GGUF_PRE_TOKENIZER_SPLITS[name] == regexes[0]:
                return name
    if not regexes and any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return "gpt-2"
    raise Medr1Error(
        "GGUF export: the tokenizer's pre-tokenizer is none of Qwen2's, Llama-3's or GPT-2's byte-level splits; "
        + FALLBACK
    )


def _rope(config: Any) -> dict[str, Any]:
    return dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})


def head_dim(config: Any) -> int:
    """Width of one attention head (Qwen3 sets it apart from hidden_size / heads)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def check_gguf_support(config: Any, tokenizer: Any) -> None:
    """A one-line error, before anything is loaded or written, when a base cannot be written to GGUF here."""
    arch = config.model_type
    if arch not in ARCHITECTURES:
        raise Medr1Error(
            f"GGUF export supports {', '.join(ARCHITECTURES)} students (this base is '{arch}'); {FALLBACK}"
        )
    rope_type = _rope(config).get("rope_type", "default")
    if rope_type != "default" and not (arch == "llama" and rope_type == "llama3"):
        raise Medr1Error(f"GGUF export: rope scaling '{rope_type}' of a {arch} base is not supported; {FALLBACK}")
    if tokenizer.backend_tokenizer.model.__class__.__name__ != "BPE":
        raise Medr1Error(f"GGUF export writes byte-level BPE tokenizers only; {FALLBACK}")
    gguf_pre_tokenizer(tokenizer)


def llama3_rope_factors(config: Any) -> Any:
    """Llama-3.1's rope scaling as one factor per rotary frequency (llama.cpp's `rope_freqs` tensor)."""
    import numpy as np

    rope = _rope(config)
    base = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    dim = head_dim(config)
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _add_hparams(writer: Any, config: Any) -> None:
    """The architecture's hyperparameters, as llama.cpp's converter writes them."""
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))
    writer.add_rope_freq_base(float(_rope(config).get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if config.model_type == "llama":
        writer.add_vocab_size(config.vocab_size)
        writer.add_rope_dimension_count(head_dim(config))


def write_gguf(model: Any, tokenizer: Any, path: Path, kind: str, name: str) -> None:
    """Write a Qwen2, Qwen3 or Llama model and its byte-level BPE tokenizer to one GGUF file with `gguf`."""
    import gguf

    config = model.config
    check_gguf_support(config, tokenizer)
    qtype, ftype = {
        "gguf-f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
        "gguf-q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
        "gguf-q4_0": (gguf.GGMLQuantizationType.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    }[kind]
    arch = gguf.MODEL_ARCH[ARCHITECTURES[config.model_type]]
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _add_hparams(writer, config)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config, gguf_pre_tokenizer(tokenizer))
    if _rope(config).get("rope_type") == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_factors(config))
    _add_tensors(writer, model, kind, qtype, gguf.get_tensor_name_map(arch, config.num_hidden_layers))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS token in front of plain text (Llama-3's does, Qwen's and SmolLM2's not)."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _add_tokenizer(writer: Any, tokenizer: Any, config: Any, pre: str) -> None:
    """The tokenizer as llama.cpp's convert_hf_to_gguf.py writes a byte-level BPE one: one token per embedding row."""
    import gguf

    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(config.vocab_size):
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
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.bos_token_id
    for setter, token_id in (
        (writer.add_bos_token_id, bos),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if isinstance(token_id, int):
            setter(token_id)
    writer.add_add_bos_token(_adds_bos(tokenizer))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _permute(weights: Any, n_head: int) -> Any:
    """Llama's q/k rows from Hugging Face's rotary layout (halves) to llama.cpp's (pairs), as its converter does."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _add_tensors(writer: Any, model: Any, kind: str, qtype: Any, names: Any) -> None:
    """Every weight under its GGUF name, quantized to `qtype` where it divides into blocks; norms and biases F32."""
    import gguf
    import numpy as np
    import torch

    config = model.config
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise Medr1Error(f"GGUF export: no GGUF name for tensor '{hf_name}'")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if config.model_type == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            data = _permute(data, config.num_attention_heads if "q_proj" in hf_name else config.num_key_value_heads)
        want = qtype
        if kind == "gguf-q4_0" and new == "token_embd.weight":
            want = gguf.GGMLQuantizationType.Q8_0  # as llama-quantize keeps embeddings at higher precision
        if data.ndim == 1 or (want != gguf.GGMLQuantizationType.F16 and data.shape[-1] % 32):
            writer.add_tensor(new, data.astype(np.float32))  # norms, biases, rows not divisible into blocks
        elif want == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(new, data.astype(np.float16))
        else:
            writer.add_tensor(new, gguf.quants.quantize(data, want), raw_dtype=want)


def reads_own_metadata(config: Any) -> bool:
    """Whether Transformers' GGUF reader rebuilds this config from the file alone: it drops Llama-3.1's rope scaling
    (llama.cpp reads it from `rope_freqs`) and Qwen3's head width when it is not hidden_size / heads."""
    return _rope(config).get("rope_type", "default") == "default" and (
        head_dim(config) == config.hidden_size // config.num_attention_heads
    )


def gguf_variant(
    kind: str, merged: Any, tokenizer: Any, folder: Path, name: str, ref: Any, no_check: bool, noise: float
) -> Variant:
    """Write `folder/NAME-KIND.gguf` from the merged model in memory, load it back through Transformers, check it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = folder / gguf_file_name(name, kind)
    folder.mkdir(parents=True, exist_ok=True)
    write_gguf(merged, tokenizer, file, kind, name)
    v = Variant(kind, str(file), file.stat().st_size)
    if not no_check:
        # Dequantized into the base's dtype, as the merged reference runs.
        own = reads_own_metadata(merged.config)
        extra = {} if own else {"config": merged.config}
        reloaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file.name, dtype=merged.dtype, **extra)
        gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=file.name)
        loader = "AutoModelForCausalLM (gguf_file=)" + ("" if own else ", the merged model's config")
        v.check = check_variant(reloaded, tokenizer, ref, kind, loader, gguf_tok, noise)
    return v


def gguf_file_name(name: str, kind: str) -> str:
    """`NAME-F16.gguf`, `NAME-Q8_0.gguf`, `NAME-Q4_0.gguf`."""
    return f"{name}-{kind.removeprefix('gguf-').upper()}.gguf"
