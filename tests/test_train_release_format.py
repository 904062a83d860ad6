"""A release trains as it loads: TRL's SFTTrainer on `load_dataset(<release folder>)["train"]`, with no MedR1 code
and no mapping, reads the `messages` column (and `messages_think_inline` for templates without `reasoning_content`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.test_train_fixtures import build_demo_release

pytest.importorskip("trl", reason="trl is in the train extra")
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_release(tmp_path_factory.mktemp("release"))


def _train_one_step(model: Path, dataset, tokenizer, out: Path):
    """What a user writes: an SFTTrainer with assistant-only loss on the dataset as given, one step on the CPU."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=2,
        assistant_only_loss=True,
        max_length=2048,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
    )
    trainer = SFTTrainer(model=str(model), args=args, train_dataset=dataset, processing_class=tokenizer)
    result = trainer.train()
    assert trainer.state.global_step == 1 and math.isfinite(result.training_loss)
    return trainer


def _trained_text(trainer) -> list[str]:
    """The tokens each example is trained on (labels not -100), decoded."""
    tok = trainer.processing_class
    return [tok.decode([t for t in ex["labels"] if t != -100]) for ex in trainer.train_dataset]


def test_sft_trainer_reads_the_messages_column_as_loaded(demo_release: Path, tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    ds = datasets.load_dataset(str(demo_release))["train"]
    trainer = _train_one_step(tiny_model, ds, AutoTokenizer.from_pretrained(tiny_model), tmp_path / "plain")
    # The tiny model's template renders `content` only: the answer is trained, the thinking is not there.
    assert _trained_text(trainer) == [f"<answer>{label}</answer><|im_end|>" for label in ds["answer_label"]]


def test_a_template_that_renders_reasoning_content_trains_the_thinking(
    demo_release: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """Qwen3's chat template puts `reasoning_content` in <think> before the answer: `messages` trains it as is."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen3_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = qwen3_chat_template
    ds = datasets.load_dataset(str(demo_release))["train"]
    trainer = _train_one_step(tiny_model, ds, tok, tmp_path / "qwen3")
    expected = [
        f"<think>\n{reasoning.strip()}\n</think>\n\n<answer>{label}</answer><|im_end|>"
        for reasoning, label in zip(ds["reasoning"], ds["answer_label"], strict=True)
    ]
    assert [text.strip("\n") for text in _trained_text(trainer)] == expected


def test_the_inline_column_trains_the_thinking_with_any_template(
    demo_release: Path, tiny_model: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    ds = datasets.load_dataset(str(demo_release))["train"]
    inline = ds.select_columns(["messages_think_inline"]).rename_column("messages_think_inline", "messages")
    trainer = _train_one_step(tiny_model, inline, AutoTokenizer.from_pretrained(tiny_model), tmp_path / "inline")
    expected = [
        f"<think>{reasoning.strip()}</think>\n<answer>{label}</answer><|im_end|>"
        for reasoning, label in zip(ds["reasoning"], ds["answer_label"], strict=True)
    ]
    assert _trained_text(trainer) == expected


def test_the_cards_prompt_completion_route_trains_any_template(
    demo_release: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """A template with no {% generation %} markers, unknown to TRL: the card's prompt/completion map of the inline
    column, and TRL's completion-only loss trains the thinking and the answer, not the prompt."""
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    ds = datasets.load_dataset(str(demo_release))["train"]
    pairs = ds.map(
        lambda row: {"prompt": row["messages_think_inline"][:-1], "completion": row["messages_think_inline"][-1:]},
        remove_columns=ds.column_names,
    )
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=1, max_length=2048, use_cpu=True, report_to=[], save_strategy="no"
    )
    trainer = SFTTrainer(model=str(tiny_model), args=args, train_dataset=pairs, processing_class=tok)
    assert trainer.train().training_loss > 0
    expected = [
        f"<think>{reasoning.strip()}</think>\n<answer>{label}</answer><|im_end|>\n"
        for reasoning, label in zip(ds["reasoning"], ds["answer_label"], strict=True)
    ]
    assert _trained_text(trainer) == expected
