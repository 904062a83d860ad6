"""The dataset card: valid Hub YAML with every config, and every number in it taken from the build."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from medr1_data.build import run
from medr1_data.card import (
    HISTOGRAM,
    changelog_lines,
    length_stats,
    render_card,
    replace_changelog,
    template_version,
)
from medr1_data.recipe import load_recipe
from medr1_data.schema import COLUMN_DOCS
from medr1_data.select import drop_counts
from medr1_data.shards import MANIFEST, read_release
from medr1_data.stages import card_inputs


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return run(load_recipe("demo"), tmp_path_factory.mktemp("card") / "medr1-reasoning", quiet=True)


@pytest.fixture(scope="module")
def card(demo):
    from huggingface_hub import DatasetCard

    return DatasetCard.load(demo.out / "README.md")


def test_yaml_has_every_config_with_its_files_and_sizes(demo, card) -> None:
    import datasets

    data = card.data.to_dict()
    manifest = json.loads((demo.out / MANIFEST).read_text())
    sources = sorted({s["name"] for s in demo.stats["sources"]})
    assert [c["config_name"] for c in data["configs"]] == ["default", *sources]
    assert data["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"}]
    for config in data["configs"][1:]:
        (files,) = config["data_files"]
        assert files["path"] == manifest["configs"][config["config_name"]]["files"]
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert list(infos) == ["default", *sources]
    schema = pq.read_schema(demo.out / manifest["files"][0]["path"])
    for name, info in infos.items():
        (split,) = info["splits"]
        rows = datasets.load_dataset(str(demo.out), name, split="train").num_rows
        assert split["num_examples"] == rows == manifest["configs"][name]["splits"]["train"]["rows"]
        assert info["download_size"] == manifest["configs"][name]["splits"]["train"]["bytes"]
        assert [f["name"] for f in info["features"]] == schema.names
    assert infos["default"]["splits"][0]["num_examples"] == demo.stats["rows"] == 25
    assert data["size_categories"] == ["n<1K"] and data["license"] == "mit"


def test_card_text_tells_the_build_numbers(demo, card) -> None:
    text, s, r = card.text, demo.stats, demo.recipe
    for src in s["sources"]:
        kept = s["kept_by_source"][f"{src['name']}/{src['split']}"]
        row = f"| {src['name']} ({src['split']}) | {src['license']} | {src['rows_read']} | {src['rejected']} | {kept} |"
        assert row in text
    for reason, n in s["reject_reasons"].items():
        assert f"| `{reason}` | {n} |" in text
    table = pq.read_table(demo.build_dir / "dropped.parquet")
    trace_drops = 0
    for reason, n in drop_counts(table).items():
        if reason in ("contaminated", "near_duplicate"):
            assert f"| not sent to the teacher: `{reason}` | {n} |" in text
            assert f"| dropped: `{reason}` |" not in text
        else:
            assert f"| dropped: `{reason}` | {n} |" in text
            trace_drops += n
    assert f"| generated (every trace the teacher returned) | {trace_drops + s['rows']} |" in text
    for name, b in s["decontam"]["benchmarks"].items():
        assert f"| `{name}` | {b['items_indexed']} | {b['rows_flagged']} |" in text
    assert f"{s['dedup']['questions']} questions form {s['dedup']['clusters_with_duplicates']} clusters" in text
    t = r.teacher
    for row in (
        f"| model | `{t.model}` |",
        f"| endpoint kind | {t.endpoint} |",
        f"| prompt template | `{t.template}` (version v1) |",
        f"| samples per question | {t.samples} |",
        f"| temperature | {t.temperature} |",
        f"| top_p | {t.top_p} |",
        f"| max tokens | {t.max_tokens} |",
    ):
        assert row in text
    assert "Question: {question}" in text  # the user-turn template
    for name in ("default", "medqa", "medmcqa", "pubmedqa"):
        rows = read_release(demo.out, config=name).num_rows
        assert re.search(rf"\| `{name}` \| {rows} \| \d+ \| [\d,]+ \|", text)
    for name in ("medqa", "medmcqa", "pubmedqa"):
        assert f'load_dataset("medr1/reasoning", "{name}", split="train", revision="v0.1.0")' in text
    assert "**It is not medical advice**" in text and "@misc{medr1," in text
    assert "- v0.1.0: first release." in text


def test_every_column_has_its_sentence(demo, card) -> None:
    manifest = json.loads((demo.out / MANIFEST).read_text())
    shard_columns = pq.read_schema(next((demo.out / "data").glob("*.parquet"))).names
    assert [c["name"] for c in manifest["schema"]] == shard_columns
    for column in manifest["schema"]:
        assert column["description"] == COLUMN_DOCS[column["name"]] != ""
        assert f"| `{column['name']}` | `{column['type']}` | {column['description']} |" in card.text


def test_lengths_and_histogram_come_from_the_shards(demo, card) -> None:
    table = read_release(demo.out)
    chars = pc.utf8_length(table["reasoning"])
    median = pc.quantile(chars, q=0.5, interpolation="nearest")[0].as_py()
    row = next(line for line in card.text.splitlines() if line.startswith("| reasoning (characters) |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert int(cells[1]) == table.num_rows and int(cells[5].replace(",", "")) == median
    assert int(cells[8].replace(",", "")) == pc.max(chars).as_py()
    svg = ET.parse(demo.out / HISTOGRAM).getroot()
    bars = [el for el in svg.iter("{http://www.w3.org/2000/svg}rect")][1:]  # after the background
    counts = [int(b.find("{http://www.w3.org/2000/svg}title").text.split(": ")[1].replace(",", "")) for b in bars]
    assert sum(counts) == table.num_rows
    assert f"![Reasoning length histogram]({HISTOGRAM})" in card.text


def test_length_stats_on_known_values() -> None:
    table = pa.table(
        {
            "source": ["a"] * 10 + ["b"] * 10,
            "reasoning": ["x" * (100 * i) for i in range(1, 21)],
            "question": ["q"] * 20,
        }
    )
    stats = length_stats(table, bins=4)
    assert stats["reasoning_chars"]["min"] == 100 and stats["reasoning_chars"]["max"] == 2000
    assert stats["reasoning_chars"]["mean"] == 1050.0
    assert stats["by_source"] == {
        "a": {"rows": 10, "reasoning_chars_p50": 500},
        "b": {"rows": 10, "reasoning_chars_p50": 1500},
    }
    hist = stats["histogram"]
    assert hist["edges"] == [0, 500, 1000, 1500, 2000] and sum(hist["counts"]) == 20
    assert hist["counts"] == [4, 5, 5, 5, 1]  # the last bin holds everything >= 2000
    assert "completion_tokens" not in stats


def test_length_stats_of_masked_rows_equal_those_of_the_filtered_table() -> None:
    table = pa.table(
        {
            "source": ["a", "b", "c"] * 20,
            "reasoning": [None if i % 7 == 0 else "y" * (37 * i % 500) for i in range(60)],
            "question": ["q" * i for i in range(60)],
            "completion_tokens": pa.array(range(60), pa.int64()),
        }
    )
    table = pa.Table.from_batches(table.to_batches(max_chunksize=11))
    mask = pa.array([i % 3 != 2 and i % 5 != 0 for i in range(60)])  # source "c" has no row left
    stats = length_stats(table, mask=mask)
    assert stats == length_stats(table.filter(mask))
    assert set(stats["by_source"]) == {"a", "b"} and sum(s["rows"] for s in stats["by_source"].values()) == 32


def test_build_report_table_is_rendered_when_present_and_skipped_when_absent(demo, tmp_path: Path) -> None:
    schema = pq.read_schema(next((demo.out / "data").glob("*.parquet")))
    stats = card_inputs(demo)
    stats["build_report"] = [
        {"stage": "ingest", "rows_in": None, "rows_out": 28, "dropped": {"no_options": 1}, "seconds": 0.5},
        {"stage": "select", "rows_in": 55, "rows_out": 55, "dropped": {"wrong_answer": 5, "truncated": 2}},
    ]
    text = render_card(tmp_path, schema, stats).read_text()
    assert "| ingest | - | 28 | `no_options` 1 |" in text
    assert "| select | 55 | 55 | `wrong_answer` 5, `truncated` 2 |" in text
    del stats["build_report"]
    assert "## Build" not in render_card(tmp_path, schema, stats).read_text()


def test_changelog_section_round_trip(card) -> None:
    assert changelog_lines(card.text) == ["v0.1.0: first release."]
    text = replace_changelog(card.text, ["v0.2.0: b", "v0.1.0: a"])
    assert changelog_lines(text) == ["v0.2.0: b", "v0.1.0: a"]
    assert text.replace("- v0.2.0: b\n- v0.1.0: a\n", "- v0.1.0: first release.\n") == card.text
    assert template_version("medr1-mcq-v1") == "v1" and template_version("custom") == "unversioned"


def test_model_card_inserts_recipe_and_dataset_text_literally() -> None:
    """A recipe value with Jinja syntax (`{#`, `{{ }}`) reaches the model card as written, and never fails it."""
    from medr1_train.card import model_card

    odd = "lr {# note, {{ not a variable }} {% raw %}"
    text = model_card(
        base_model="org/base-{{ x }}",
        dataset_ref={"dataset": "medr1/reasoning", "revision": "v0.3.1"},
        recipe={"train": {"note": odd}},
        recipe_name="r {# n",
        recipe_sha256="0" * 64,
        stats={"rows": 3},
    )
    assert odd in text and "org/base-{{ x }}" in text and "r {# n" in text


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_training_section_configs_name_the_release_columns(demo, card) -> None:
    """The trainer configs in the card parse, and every column, field and role they name is in the release."""
    import yaml

    text, version = card.text, demo.recipe.version
    rows = read_release(demo.out).select(["messages", "messages_think_inline"]).to_pylist()
    roles = {m["role"] for r in rows for m in r["messages_think_inline"]}
    (entry,) = [json.loads(b) for b in _code_blocks(text, "json")]
    lf = entry["medr1"]
    assert lf["hf_hub_url"] == demo.recipe.card.repo_id and lf["split"] == "train" and lf["formatting"] == "sharegpt"
    column = lf["columns"]["messages"]
    assert column == "messages_think_inline" and set(rows[0][column][0]) == {
        lf["tags"]["role_tag"],
        lf["tags"]["content_tag"],
    }
    assert {lf["tags"][f"{r}_tag"] for r in ("system", "user", "assistant")} == roles == {"system", "user", "assistant"}
    (axolotl,) = [yaml.safe_load(b) for b in _code_blocks(text, "yaml")]
    (ds,) = axolotl["datasets"]
    assert ds["type"] == "chat_template" and ds["path"] == demo.recipe.card.repo_id and ds["revision"] == f"v{version}"
    assert ds["field_messages"] in rows[0] and set(ds["message_property_mappings"].values()) <= set(
        rows[0]["messages"][0]
    )
    assert ds["roles_to_train"] == ["assistant"] and axolotl["chat_template"] == "tokenizer_default"
    (python,) = _code_blocks(text, "python")[1:]  # after the loading snippet
    assert f'load_dataset("{demo.recipe.card.repo_id}", split="train", revision="v{version}")' in python
    assert "SFTTrainer(" in python and '"messages_think_inline"' in python
