"""The GGUF writer: a merged Qwen2 model and its byte-level BPE tokenizer as one llama.cpp / Ollama file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medr1_data import Medr1Error
from medr1_train.export.checks import Variant, check_variant


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
    arch = gguf.MODEL_ARCH.QWEN2
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config, pre)
    _add_tensors(writer, model, kind, qtype, gguf.get_tensor_name_map(arch, config.num_hidden_layers))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


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


def _add_tensors(writer: Any, model: Any, kind: str, qtype: Any, names: Any) -> None:
    """Every weight under its GGUF name, quantized to `qtype` where it divides into blocks; norms and biases F32."""
    import gguf
    import numpy as np
    import torch

    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
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


def gguf_variant(
    kind: str, merged: Any, tokenizer: Any, folder: Path, name: str, ref: Any, no_check: bool, noise: float
) -> Variant:
    """Write `folder/NAME-KIND.gguf` from the merged model in memory, load it back through Transformers, check it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = folder / f"{name}-{kind.removeprefix('gguf-').upper()}.gguf"
    write_gguf(merged, tokenizer, file, kind, name)
    v = Variant(kind, str(file), file.stat().st_size)
    if not no_check:
        # Dequantized into the base's dtype, as the merged reference runs.
        reloaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file.name, dtype=merged.dtype)
        gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=file.name)
        v.check = check_variant(reloaded, tokenizer, ref, kind, "AutoModelForCausalLM (gguf_file=)", gguf_tok, noise)
    return v
