"""torchao weight-only variants of the merged model through Transformers' `TorchAoConfig`: int8 (CPU, CUDA), int4."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medr1_train.export.checks import Variant, check_variant, weights_bytes


def _int4_group_size(merged_dir: Path) -> int:
    config = json.loads((merged_dir / "config.json").read_text())
    widths = {config["hidden_size"], config["intermediate_size"]}
    return next((g for g in (128, 64, 32) if all(w % g == 0 for w in widths)), 32)


def torchao_variant(
    kind: str, merged_dir: Path, folder: Path, dtype: Any, ref: Any, no_check: bool, tokenizer: Any, noise: float
) -> Variant:
    """Quantize the merged model saved in `merged_dir` into `folder` (`int8` or `int4`), load it back, check it."""
    import torch
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig

    if kind == "int8":
        quant, device, load_dtype = Int8WeightOnlyConfig(), "cpu", dtype
    else:
        quant = Int4WeightOnlyConfig(group_size=_int4_group_size(merged_dir), int4_packing_format="tile_packed_to_4d")
        device, load_dtype = "cuda", torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(
        merged_dir, dtype=load_dtype, device_map=device, quantization_config=TorchAoConfig(quant)
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    v = Variant(kind, str(folder), weights_bytes(folder))
    if not no_check:
        reloaded = AutoModelForCausalLM.from_pretrained(folder, device_map=device)
        v.check = check_variant(
            reloaded, AutoTokenizer.from_pretrained(folder), ref, kind, "AutoModelForCausalLM (torchao)", noise=noise
        )
    return v
