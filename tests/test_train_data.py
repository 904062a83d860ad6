"""Release rows → filtered, held-out-by-question, tokenised examples whose labels cover the assistant turn only."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from medr1_data.prompts import get_template
from medr1_data.schema import CHAT_FIELDS
from medr1_data.shards import read_release
from medr1_train.config import ConfigError, DataConfig
from medr1_train.data import (
    GENERATION_MARKERS,
    IGNORE_INDEX,
    PROMPT_COMPLETION,
    inline_thinking,
    load_release,
    prepare,
    select_rows,
    to_messages,
)
from tests.test_train_fixtures import build_demo_release, tiny_recipe, write_release

pytest.importorskip("transformers", reason="transformers is in the train extra")

MESSAGES_TYPE = next(f.type for f in CHAT_FIELDS if f.name == "messages")


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_release(tmp_path_factory.mktemp("release"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _ids(table) -> list[str]:
    return sorted({i.rsplit("/", 1)[-1] for i in table["id"].to_pylist()})  # the fixture's own ids


def _mapped(release: Path) -> pa.Table:
    """The release as training reads it: the Arrow table of a memory-mapped `datasets.Dataset`."""
    ds, _ = load_release(DataConfig(dataset=str(release)))
    assert ds.cache_files, "the release is not memory-mapped from the datasets cache"
    return ds.data.table


def _select(table: pa.Table, cfg: DataConfig, seed: int) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    train, ev, counts = select_rows(table, cfg, seed)
    return table.take(train), table.take(ev), counts


def test_filters_use_the_release_columns(tmp_path: Path) -> None:
    rows = [
        {"id": "q1", "question": "ok", "sample_idx": 0},
        {"id": "q1", "question": "ok", "sample_idx": 1},
        {"id": "q2", "question": "wrong", "is_correct": False},
        {"id": "q3", "question": "sloppy", "quality_score": 0.2},
        {"id": "q4", "question": "leaked", "contaminated": True},
        {"id": "q5", "question": "other source", "source": "medmcqa"},
        {"id": "q6", "question": "null verdict", "is_correct": None},
    ]
    table = _mapped(write_release(tmp_path / "rel", rows))
    cfg = DataConfig(min_quality=0.5, sources=["medqa"], eval_fraction=0.0)
    train, ev, counts = _select(table, cfg, seed=0)
    assert _ids(train) == ["q1"] and train.num_rows == 2 and ev.num_rows == 0
    assert counts["dropped_not_correct"] == 2  # false and null verdicts
    assert counts["dropped_low_quality"] == 1
    assert counts["dropped_contaminated"] == 1
    assert counts["dropped_source_not_selected"] == 1

    lax = DataConfig(require_correct=False, drop_contaminated=False, eval_fraction=0.0)
    train, _, _ = _select(table, lax, seed=0)
    assert train.num_rows == len(rows)


def test_caps_per_source_and_per_question_are_deterministic(tmp_path: Path) -> None:
    rows = [
        {"id": f"{src}{i}", "question": f"q {i}", "source": src, "sample_idx": s}
        for src, n in (("medqa", 10), ("medmcqa", 30))
        for i in range(n)
        for s in range(2)
    ]
    table = _mapped(write_release(tmp_path / "rel", rows))
    cfg = DataConfig(max_per_source={"medmcqa": 7}, max_samples_per_question=1, eval_fraction=0.0)
    train, _, counts = _select(table, cfg, seed=3)
    sources = train["source"].to_pylist()
    assert sources.count("medmcqa") == 7 and sources.count("medqa") == 10
    assert len(train["id"].to_pylist()) == len(set(train["id"].to_pylist()))  # one sample per question
    assert counts["dropped_samples_per_question_cap"] + counts["dropped_source_cap"] == 80 - 17
    again, _, _ = _select(table, cfg, seed=3)
    assert again.equals(train)
    other, _, _ = _select(table, cfg, seed=4)
    assert _ids(other) != _ids(train)


def test_eval_split_holds_out_whole_questions(tmp_path: Path) -> None:
    rows = [{"id": f"q{i:02d}", "question": f"q {i}", "sample_idx": s} for i in range(40) for s in range(3)]
    table = _mapped(write_release(tmp_path / "rel", rows))
    train, ev, counts = _select(table, DataConfig(eval_fraction=0.25), seed=0)
    assert counts["eval_questions"] == 10 and len(_ids(ev)) == 10 and ev.num_rows == 30
    assert not set(_ids(ev)) & set(_ids(train)) and len(_ids(train)) == 30 and train.num_rows == 90
    _, ev2, _ = _select(table, DataConfig(eval_fraction=0.25), seed=0)
    assert _ids(ev2) == _ids(ev)
    _, ev3, _ = _select(table, DataConfig(eval_fraction=0.25), seed=1)
    assert _ids(ev3) != _ids(ev)


def test_messages_are_the_eval_prompt_plus_the_assistant_turn() -> None:
    row = {
        "id": "x",
        "question": "  Which nerve?  ",
        "options": [{"label": "A", "text": "ulnar"}, {"label": "B", "text": "median"}],
        "context": "An abstract.",
        "reasoning": "\nThe median nerve passes the carpal tunnel.\n",
        "response": "Median. <answer>B</answer>",
        "answer_label": "B",
    }
    expected = get_template("medr1-mcq-v1").messages(row["question"], row["options"], row["context"])
    msgs = to_messages(row, DataConfig())
    assert msgs[:2] == expected
    assert msgs[2] == {
        "role": "assistant",
        "content": "<think>The median nerve passes the carpal tunnel.</think>\n<answer>B</answer>",
    }
    custom = to_messages(row, DataConfig(assistant_format="<think>{reasoning}</think>\n{response}"))
    assert custom[2]["content"].endswith("</think>\nMedian. <answer>B</answer>")
    with pytest.raises(ConfigError, match="field 'verdict' is not a column"):
        to_messages(row, DataConfig(assistant_format="{verdict}"))


def test_only_assistant_tokens_carry_labels(demo_release: Path, tokenizer) -> None:
    cfg = DataConfig(dataset=str(demo_release), max_length=4096, eval_fraction=0.0)
    prepared = prepare(cfg, tokenizer)
    table = read_release(demo_release)
    by_question = {r["question"]: r for r in table.to_pylist()}
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(prepared.train) == 25
    for ex in prepared.train:
        ids, labels = ex["input_ids"], ex["labels"]
        first = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
        last = max(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
        assert all(t == IGNORE_INDEX for t in labels[:first])
        assert labels[first : last + 1] == ids[first : last + 1]  # one contiguous span, labels equal to the inputs
        assert ids[last] == im_end  # the end-of-turn token is trained, so the student learns to stop
        prompt = tokenizer.decode(ids[:first])
        assert prompt.endswith("<|im_start|>assistant\n") and prompt.count("<|im_start|>assistant") == 1
        row = by_question[next(q for q in by_question if q.strip() in prompt)]
        answer = tokenizer.decode(ids[first:last])
        assert answer == f"<think>{row['reasoning'].strip()}</think>\n<answer>{row['answer_label']}</answer>"
        assert ex["n_labels"] == last - first + 1


def test_over_length_rows_are_dropped_and_counted_never_cut(demo_release: Path, tokenizer) -> None:
    full = prepare(DataConfig(dataset=str(demo_release), max_length=4096, eval_fraction=0.0), tokenizer)
    lengths = sorted(full.train["length"])
    limit = lengths[len(lengths) // 2]
    cut = prepare(DataConfig(dataset=str(demo_release), max_length=limit, eval_fraction=0.0), tokenizer)
    assert cut.stats["dropped_too_long_train"] == sum(n > limit for n in lengths) > 0
    assert len(cut.train) == sum(n <= limit for n in lengths)
    kept = {tuple(ids) for ids in cut.train["input_ids"]}
    assert kept <= {tuple(ids) for ids in full.train["input_ids"]}  # whole examples, none shortened

    with pytest.raises(ConfigError, match=r"every training row is longer than data\.max_length=16"):
        prepare(DataConfig(dataset=str(demo_release), max_length=16, eval_fraction=0.0), tokenizer)


def test_data_errors_are_one_line(tmp_path: Path, tokenizer) -> None:
    import pyarrow.parquet as pq

    from medr1_data import Medr1Error
    from medr1_data.shards import ShardSettings, read_release, write_manifest, write_shards

    rel = write_release(tmp_path / "rel", [{"id": "q1", "question": "x"}])
    no_verdict = read_release(rel).drop_columns(["is_correct"])
    files = write_shards(no_verdict, tmp_path / "nv", ShardSettings())
    write_manifest(tmp_path / "nv", files, no_verdict.schema, {"name": "t", "version": "1"}, "ab")
    with pytest.raises(ConfigError, match=r"release has no column .is_correct. \(needed for data\.require_correct"):
        prepare(DataConfig(dataset=str(tmp_path / "nv")), tokenizer)
    f = next((rel / "data").glob("*.parquet"))
    pq.write_table(pq.read_table(f).drop_columns(["is_correct"]), f)  # changed after the build: not trusted
    with pytest.raises(Medr1Error, match="checksum does not match the manifest"):
        prepare(DataConfig(dataset=str(rel)), tokenizer)
    with pytest.raises(ConfigError, match="no such file or folder"):
        prepare(DataConfig(dataset=str(tmp_path / "missing")), tokenizer)
    with pytest.raises(ConfigError, match="no Parquet files"):
        prepare(DataConfig(dataset=str(_mkdir(tmp_path / "empty"))), tokenizer)
    with pytest.raises(ConfigError, match="not a local folder and could not be loaded from the Hub"):
        prepare(DataConfig(dataset="medr1/no-such-dataset", revision="v0"), tokenizer)


def _assistant_span(ex: dict) -> tuple[int, int]:
    """First and last positions that carry a label."""
    kept = [i for i, t in enumerate(ex["labels"]) if t != IGNORE_INDEX]
    return kept[0], kept[-1]


def test_conversations_come_from_the_release_messages_column(demo_release: Path, tokenizer) -> None:
    table = read_release(demo_release)
    for row in table.to_pylist():  # the release's two chat columns hold the same conversation
        assert [inline_thinking(m) for m in row["messages"]] == row["messages_think_inline"]
        assert row["messages"][2]["reasoning_content"] == row["reasoning"].strip()
    column = prepare(DataConfig(dataset=str(demo_release), eval_fraction=0.0), tokenizer)
    rendered = prepare(DataConfig(dataset=str(demo_release), eval_fraction=0.0, messages=None), tokenizer)
    assert column.stats["conversations"] == "release column messages"
    assert rendered.stats["conversations"].startswith("rendered (medr1-mcq-v1")
    # The column the build wrote is the conversation medr1-train renders from the question and trace columns.
    assert column.train["input_ids"] == rendered.train["input_ids"]
    assert column.train["labels"] == rendered.train["labels"]
    inline = prepare(
        DataConfig(dataset=str(demo_release), eval_fraction=0.0, messages="messages_think_inline"), tokenizer
    )
    assert inline.train["input_ids"] == column.train["input_ids"]


def test_a_release_chat_column_is_trained_as_written(tmp_path: Path, tokenizer) -> None:
    """Whatever the other columns say, the turns of the `messages` column are what is trained on."""
    from medr1_data.shards import ShardSettings, read_release, write_manifest, write_shards

    base = read_release(write_release(tmp_path / "rel", [{"id": "q1", "question": "Which side?"}]))
    turns = [
        {"role": "system", "content": "Be brief.", "reasoning_content": None},
        {"role": "user", "content": "Left or right? A. left B. right", "reasoning_content": None},
        {"role": "assistant", "content": "<answer>B</answer>", "reasoning_content": "Right it is."},
    ]
    table = base.append_column("messages", pa.array([turns], type=MESSAGES_TYPE))
    write_manifest(tmp_path / "chat", write_shards(table, tmp_path / "chat", ShardSettings()), table.schema, {}, "0")
    prepared = prepare(DataConfig(dataset=str(tmp_path / "chat"), eval_fraction=0.0), tokenizer)
    (ex,) = prepared.train
    first, last = _assistant_span(ex)
    prompt = tokenizer.decode(ex["input_ids"][:first])
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nLeft or right? A. left B. right<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (
        tokenizer.decode(ex["input_ids"][first : last + 1])
        == "<think>Right it is.</think>\n<answer>B</answer><|im_end|>"
    )
    rendered = prepare(DataConfig(dataset=str(tmp_path / "chat"), eval_fraction=0.0, messages=None), tokenizer)
    assert "Which side?" in tokenizer.decode(rendered.train[0]["input_ids"]) and "Which side?" not in prompt


def _without_markers(tokenizer):
    tokenizer.chat_template = tokenizer.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    return tokenizer


def test_any_template_gets_assistant_only_loss_through_prompt_completion(demo_release: Path, tiny_model: Path) -> None:
    """A template with no {% generation %} markers that TRL does not know: the loss covers what follows the prompt."""
    from transformers import AutoTokenizer

    tok = _without_markers(AutoTokenizer.from_pretrained(tiny_model))
    prepared = prepare(DataConfig(dataset=str(demo_release), eval_fraction=0.0), tok)
    assert prepared.stats["loss_on"] == PROMPT_COMPLETION
    by_question = {r["question"].strip(): r for r in read_release(demo_release).to_pylist()}
    for ex in prepared.train:
        first, last = _assistant_span(ex)
        assert all(t == IGNORE_INDEX for t in ex["labels"][:first]) and last == len(ex["labels"]) - 1
        prompt = tok.decode(ex["input_ids"][:first])
        assert prompt.startswith("<|im_start|>system\nYou are a medical expert") and prompt.endswith(
            "<|im_start|>assistant\n"
        )
        row = by_question[next(q for q in by_question if q in prompt)]
        # The tiny template ends each turn with <|im_end|> and a newline: the completion keeps both, as TRL's would.
        reasoning = row["reasoning"].strip()
        assert (
            tok.decode(ex["labels"][first:])
            == f"<think>{reasoning}</think>\n<answer>{row['answer_label']}</answer><|im_end|>\n"
        )


def test_a_template_that_renders_the_prompt_differently_is_refused(demo_release: Path, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = _without_markers(AutoTokenizer.from_pretrained(tiny_model))
    # The generation prompt opens the thinking, but a written conversation does not: the prompt is not a prefix.
    tok.chat_template = tok.chat_template.replace(
        "'<|im_start|>assistant\\n' }}{%- endif %}", "'<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
    )
    assert "<think>" in tok.chat_template
    with pytest.raises(ConfigError, match="renders the prompt with its generation prompt differently"):
        prepare(DataConfig(dataset=str(demo_release), eval_fraction=0.0), tok)


def test_the_recipe_can_supply_the_chat_template(demo_release: Path, tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    import yaml
    from transformers import AutoTokenizer

    from medr1_train.config import load_config
    from medr1_train.sft import load_tokenizer

    student = tmp_path / "student"
    shutil.copytree(tiny_model, student)
    with_markers = AutoTokenizer.from_pretrained(tiny_model).chat_template
    _without_markers(AutoTokenizer.from_pretrained(tiny_model)).save_pretrained(student)
    (tmp_path / "chat.jinja").write_text(with_markers)

    def recipe(name: str, chat_template: str) -> Path:
        path = tiny_recipe(tmp_path / f"{name}.yaml", student, demo_release, tmp_path / "out")
        data = yaml.safe_load(path.read_text())
        data["model"]["chat_template"] = chat_template
        path.write_text(yaml.safe_dump(data))
        return path

    tok = load_tokenizer(load_config(str(recipe("file", "chat.jinja"))))  # a file beside the recipe
    assert tok.chat_template == with_markers
    assert prepare(DataConfig(dataset=str(demo_release), eval_fraction=0.0), tok).stats["loss_on"] == GENERATION_MARKERS
    assert load_tokenizer(load_config(str(recipe("inline", with_markers)))).chat_template == with_markers
    assert AutoTokenizer.from_pretrained(student).chat_template != with_markers  # the student's own is unmarked
    with pytest.raises(ConfigError, match=r"model.chat_template: no such file .*nope.jinja"):
        load_config(str(recipe("missing", "nope.jinja")))


def test_cli_dry_run_prints_the_data_counts(
    tmp_path: Path, tiny_model: Path, demo_release: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from medr1_train import cli

    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_model, demo_release, tmp_path / "out")
    args = ["sft", "--config", str(recipe), "--dry-run", "--data.max_per_source", "{medqa: 2}", "--eval_fraction", "0"]
    assert cli.main(args) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["recipe"] == "tiny-test" and counts["dataset"]["revision"].startswith("medr1-demo@0.1.0")
    assert counts["rows_read"] == 25 and counts["eval_questions"] == 0
    assert counts["train_rows_selected"] == 25 - counts["dropped_source_cap"]
    assert counts["dropped_source_cap"] == 9 - 2  # the demo release has 9 medqa rows
    assert counts["train_examples"] + counts["dropped_too_long_train"] == counts["train_rows_selected"]
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_qwen25_template_gets_trls_training_version(demo_release: Path, tiny_model: Path) -> None:
    """Qwen2.5-Instruct's own template has no {% generation %} markers; TRL's training copy of it is used instead."""
    from transformers import AutoTokenizer
    from trl.chat_template_utils import qwen2_5_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = qwen2_5_chat_template
    prepared = prepare(DataConfig(dataset=str(demo_release), max_length=4096, eval_fraction=0.0), tok)
    ex = prepared.train[0]
    first = next(i for i, t in enumerate(ex["labels"]) if t != IGNORE_INDEX)
    prompt, answer = tok.decode(ex["input_ids"][:first]), tok.decode([t for t in ex["labels"] if t != IGNORE_INDEX])
    assert prompt.startswith("<|im_start|>system\nYou are a medical expert") and prompt.endswith(
        "<|im_start|>assistant"
    )
    # TRL's copy puts the newline after the role inside the assistant turn, and the one after <|im_end|> too.
    assert answer.startswith("\n<think>") and answer.endswith("</answer><|im_end|>\n")
    # Rendered as Qwen2.5 renders it at inference: the training copy only adds the markers.
    row = prepared_row(demo_release, prompt)
    plain = tok.apply_chat_template(to_messages(row, DataConfig()), tokenize=True, return_dict=True)["input_ids"]
    assert ex["input_ids"] == list(plain)


def prepared_row(release: Path, prompt: str) -> dict:
    """The release row whose question appears in `prompt`."""
    table = read_release(release)
    return next(r for r in table.to_pylist() if r["question"].strip() in prompt)
