"""A tiny random-weight Qwen2 model and a BPE tokenizer trained on the spot: offline stand-ins for a real student."""

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


def corpus(n: int = 400) -> list[str]:
    """Deterministic medical-ish sentences plus the prompt and answer formats the model will see."""
    lines = [SYSTEM_PROMPT, "Question: Which of the following is correct?", "Options:", "A. B. C. D. E."]
    for i in range(n):
        words = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(8 + i % 9)]
        lines.append(" ".join(words) + ".")
        lines.append(f"<think>{' '.join(words[:5])}</think>\n<answer>{'ABCDE'[i % 5]}</answer>")
    return lines


def build_tokenizer(out: Path, vocab_size: int = 600):
    """Train a byte-level BPE tokenizer on `corpus()`, give it a chat template and save it to `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.add_tokens(THINK_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    fast.padding_side = "left"
    fast.save_pretrained(out)
    return fast


def build_tiny_model(out: Path | str, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Save a random-weight `Qwen2ForCausalLM` and its tokenizer to `out` (seconds, offline) and return `out`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(out)
    (out / "tiny_model.json").write_text(json.dumps({"seed": seed, "hidden_size": hidden_size, "layers": layers}))
    return out
