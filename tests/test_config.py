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
    ],
)
def test_build_recipe_values_are_typed(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe("demo", [override])


def test_typed_values_are_converted_as_their_fields_say() -> None:
    r = load_recipe("demo", ["select.min_quality=1", "teacher.model=[unclosed", "dedup.settings={source_priority: [a]}"])
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
