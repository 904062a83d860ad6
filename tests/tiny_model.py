"""Tiny random-weight Qwen2, Qwen3 and Llama models and BPE tokenizers trained on the spot: offline stand-ins for a
real student's architecture (the real small model of the tests is SmolLM2, `tests/smollm2.py`)."""

from __future__ import annotations

import json
from pathlib import Path

from medr1_data.prompts import SYSTEM_PROMPT

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added as ordinary (non-special) tokens so that decoding keeps them, as Qwen's and R1's tokenizers do.
THINK_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen2.5's layout with `{% generation %}` markers around the assistant turn, so that
# `return_assistant_tokens_mask=True` (and TRL's assistant-only loss) can find the assistant's tokens.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_VOCABULARY = (
    "patient presents with chest pain fever cough dyspnea hypertension diabetes renal hepatic cardiac pulmonary "
    "artery vein nerve muscle bone blood pressure pulse examination shows laboratory studies reveal most likely "
    "diagnosis next best step management treatment drug mechanism of action adverse effect infection antibiotic "
    "insulin glucose sodium potassium calcium anemia platelet leukocyte biopsy radiograph therapy dose year old "
    "man woman child history smoking alcohol emergency department which following answer option correct because "
    "therefore the a an of in to is are was with for on by and or not yes no maybe A B C D E"
)
WORDS = _VOCABULARY.split()
# Llama-3's pre-tokenizer split (`llama-bpe` in llama.cpp), as its tokenizer.json has it.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BOS = "<|begin_of_text|>"


def corpus(n: int = 400) -> list[str]:
    """Deterministic medical-ish sentences plus the prompt and answer formats the model will see."""
    lines = [SYSTEM_PROMPT, "Question: Which of the following is correct?", "Options:", "A. B. C. D. E."]
    for i in range(n):
        words = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(8 + i % 9)]
        lines.append(" ".join(words) + ".")
        lines.append(f"<think>{' '.join(words[:5])}</think>\n<answer>{'ABCDE'[i % 5]}</answer>")
    return lines


def build_tokenizer(out: Path, vocab_size: int = 600, split: str | None = None, bos: bool = False):
    """Train a byte-level BPE tokenizer on `corpus()`, give it a chat template and save it to `out`.

    `split`: a regex split before the byte-level step (Qwen2's or Llama-3's), as those tokenizers have; `bos`: put
    a `<|begin_of_text|>` in front of every text and of the chat template, as Llama-3's does.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split is not None:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + ([BOS] if bos else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=BOS if bos else None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.add_tokens(THINK_TOKENS)
    fast.chat_template = ("{{- bos_token }}" if bos else "") + CHAT_TEMPLATE
    fast.model_max_length = 4096
    fast.padding_side = "left"
    fast.save_pretrained(out)
    return fast


def _config(arch: str, vocab_size: int, hidden_size: int, layers: int, tokenizer, rope: dict | None):
    """The architecture's config at tiny sizes; Qwen3's heads are wider than hidden_size / heads, as in Qwen3-4B."""
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id or tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if rope is not None:
        common["rope_parameters"] = rope
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if arch == "qwen3":
        return Qwen3Config(**common, head_dim=2 * hidden_size // 4, tie_word_embeddings=True)
    return LlamaConfig(**common, tie_word_embeddings=False)  # untied, as Llama-3.1-8B


def build_tiny_model(
    out: Path | str,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    arch: str = "qwen2",
    rope: dict | None = None,
    qk_gain: float = 1.0,
) -> Path:
    """Save a random-weight `arch` model (qwen2, qwen3, llama) and its tokenizer to `out` (seconds, offline).

    The Qwen2 model has a GPT-2-style byte-level tokenizer, Qwen3 Qwen2's split, Llama Llama-3's split and BOS.
    `rope`: the config's `rope_parameters` (e.g. Llama-3.1's `llama3` scaling). `qk_gain` scales the q and k
    projections: at the initializer's scale attention is nearly uniform and positions barely change the logits.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if arch == "qwen2":
        tokenizer = build_tokenizer(out)
    else:
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        split = PRETOKENIZE_REGEX if arch == "qwen3" else LLAMA3_SPLIT
        tokenizer = build_tokenizer(out, split=split, bos=arch == "llama")
    config = _config(arch, len(tokenizer), hidden_size, layers, tokenizer, rope)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(qk_gain)
            layer.self_attn.k_proj.weight.mul_(qk_gain)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(out)
    (out / "tiny_model.json").write_text(
        json.dumps({"seed": seed, "hidden_size": hidden_size, "layers": layers, "arch": arch, "qk_gain": qk_gain})
    )
    return out
