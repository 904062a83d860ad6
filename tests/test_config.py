"""The one recipe loader (`medr1_data.config`): typed values, one override parser, one name-or-path rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medr1_data import config
from medr1_data.config import ConfigError
from medr1_data.recipe import load_recipe
from medr1_train.config import load_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.samples=two", "teacher.samples: expected int, got 'two'"),
        ("select.min_quality=abc", "select.min_quality: expected float, got 'abc'"),
        ("score.weights=3", "score.weights: expected a mapping, got 3"),
        ("dedup.settings=3", "dedup.settings: expected a mapping, got 3"),
        ("decontam.settings.top_k=abc", "decontam.settings.top_k: expected int, got 'abc'"),
        ("decontam.settings.nosuch=1", "decontam.settings: unknown key 'nosuch'"),
        ("sources=[{spec: medqa, split: 3, extra: 1}]", "sources[0]: unknown key 'extra'"),
        ("teacher=5", "teacher: expected a mapping, got int"),
        ("teacher.samples=0", "teacher.samples: expected a value at least 1, got 0"),
        ("teacher.endpoint=deepsek", "teacher.endpoint: 'deepsek' is not one of deepseek"),
        ("teacher.top_p=1.5", "teacher.top_p: expected a value in [0.0, 1.0], got 1.5"),
        ("teacher.price_output_per_m=-1", "teacher.price_output_per_m: expected a value at least 0.0"),
        ("select.keep=bestt", "select.keep: 'bestt' is not one of best, all_correct"),
        ("select.reject_flags=[nosuchflag]", "select.reject_flags: 'nosuchflag' is not one of truncated"),
        ("select.min_quality=2", "select.min_quality: expected a value in [0.0, 1.0], got 2.0"),
        ("score.loop_repeats=-1", "score.loop_repeats: expected a value at least 2, got -1"),
        ("score.weights={hedging: 3}", "score.weights: expected a value in [0.0, 1.0], got 3.0"),
        ("score.weights={nosuch: 0.5}", "score.weights: 'nosuch' is not one of truncated"),
        ("output.compression_level=30", "output.compression_level: expected a value in [1, 22], got 30"),
        ("output.shard_bytes=0", "output.shard_bytes: expected a value at least 1, got 0"),
        ("dedup.settings.near=2", "dedup.settings.near: expected a value in [0.0, 1.0], got 2.0"),
        ("dedup.settings.top_k=0", "dedup.settings.top_k: expected a value at least 1, got 0"),
        ("card.changelog=3", "card.changelog: expected a list, got 3"),
        ("version=abc", "version: expected MAJOR.MINOR.PATCH (e.g. 1.2.0), got 'abc'"),
        ("version=1.0", "version: expected MAJOR.MINOR.PATCH"),
        ("stages=[ingest, fly]", "unknown stage 'fly'"),
    ],
)
def test_build_recipe_values_are_typed(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe("demo", [override])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--train.lr_scheduler_type", "cosin"], "train.lr_scheduler_type: 'cosin' is not one of linear"),
        (["--model.attn_implementation", "fa"], "model.attn_implementation: 'fa' is not one of eager"),
        (["--learning_rate", "-1"], "train.learning_rate: expected a value at least"),
        (["--data.max_per_source", "{medqa: 0}"], "data.max_per_source: expected a value at least 1, got 0"),
        (["--data.min_quality", "1.5"], "data.min_quality"),
        (["--save_total_limit", "0"], "train.save_total_limit: expected a value at least 1, got 0"),
    ],
)
def test_training_recipe_values_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("qwen2.5-3b", overrides)


def test_typed_values_are_converted_as_their_fields_say() -> None:
    overrides = ["select.min_quality=1", "teacher.model=[unclosed", "dedup.settings={source_priority: [a]}"]
    r = load_recipe("demo", overrides)
    assert r.select.min_quality == 1.0 and isinstance(r.select.min_quality, float)
    assert r.teacher.model == "[unclosed"  # not YAML: the text itself
    assert r.dedup.parsed().source_priority == ("a",)


def test_both_packages_parse_overrides_the_same_way() -> None:
    data = config.apply_overrides({}, [config.split_override("a.b=[1, 2]"), config.split_override("c={x: 1}")])
    train = config.apply_overrides({}, config.flag_overrides(["--a.b", "[1, 2]", "--c={x: 1}"]))
    assert data == train == {"a": {"b": [1, 2]}, "c": {"x": 1}}


def test_a_bundled_name_and_a_local_file_never_shadow_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    local = yaml.safe_load((Path(load_recipe("demo").base_dir) / "demo.yaml").read_text())
    local["name"] = "my-local-demo"
    Path("demo").write_text(yaml.safe_dump(local))
    assert load_recipe("demo").name == "medr1-demo"  # a bare name is the bundled recipe
    with pytest.raises(ConfigError, match=re.escape("give its path: ./demo2")):
        Path("demo2").write_text("x: 1\n")
        load_recipe("demo2")
    with pytest.raises(ConfigError, match="no such recipe file"):
        load_recipe("./nosuch.yaml")
    train = tmp_path / "qwen2.5-7b.yaml"
    train.write_text(yaml.safe_dump({"name": "mine", "train": {"max_steps": 3}}))
    assert load_config("qwen2.5-7b").name != "mine"
    assert load_config("./qwen2.5-7b.yaml").name == "mine"  # a path is the file


def test_eval_and_train_name_a_missing_model_or_task_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`medr1-eval` and `medr1-train` check the task names and local model paths before loading anything."""
    pytest.importorskip("lm_eval", reason="lm-eval is in the eval extra")
    from medr1_data.lm_eval_tasks.cli import main as eval_main
    from medr1_train.cli import main as train_main

    assert eval_main(["--model", "hf", "--model_args", "pretrained=x/y", "--tasks", "medr1_nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medr1-eval: error: unknown task 'medr1_nosuch' (MedR1 tasks: medr1, ")
    assert err.count("\n") == 1
    assert eval_main(["--model", "hf", "--model_args", "pretrained=/no/such/model", "--tasks", "medr1_medqa"]) == 2
    assert capsys.readouterr().err == (
        "medr1-eval: error: --model_args pretrained='/no/such/model': no such local folder (a Hub id looks like "
        "ORG/NAME)\n"
    )
    assert train_main(["sft", "--config", "qwen2.5-3b", "--model.name_or_path", "./no/such/model"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "medr1-train: error: model.name_or_path './no/such/model': no such local folder (a Hub id looks like ORG/NAME)"
    )
