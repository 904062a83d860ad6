"""Training recipes: YAML into dataclasses, `--key value` overrides, and one-line errors from `medr1-train`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medr1_train import cli
from medr1_train.config import RECIPES_DIR, ConfigError, load_config, parse_overrides


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


STUDENTS = {
    "qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-14b": "Qwen/Qwen2.5-14B-Instruct",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-14b": "Qwen/Qwen3-14B",
    "llama3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
}


def test_every_bundled_recipe_is_listed() -> None:
    assert sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) == sorted(STUDENTS)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_bundled_recipes_load_by_name(name: str) -> None:
    r = load_config(name)
    assert r.model.name_or_path == STUDENTS[name]
    assert r.name == f"{name}-medr1-lora" and r.train.output_dir == f"runs/{name}-medr1-lora"
    assert r.lora.target_modules == "all-linear" and r.lora.r == 64
    assert r.train.packing and r.train.lr_scheduler_type == "cosine" and r.train.gradient_checkpointing
    assert r.data.messages == "messages" and r.data.template == "medr1-mcq-v1"
    assert r.data.assistant_format == "<think>{reasoning}</think>\n<answer>{answer_label}</answer>"
    assert r.model.chat_template is None  # each student's own template; the loss mask is found from it
    assert r.source == str(RECIPES_DIR / f"{name}.yaml")


def test_overrides_set_typed_values_and_change_the_recipe_hash() -> None:
    base = load_config("qwen2.5-7b")
    r = load_config(
        "qwen2.5-7b",
        ["--train.max_steps", "5", "--lora.r=16", "--max_per_source", "{medqa: 3}", "--packing", "false", "--merge"],
    )
    assert r.train.max_steps == 5 and r.lora.r == 16 and r.data.max_per_source == {"medqa": 3}
    assert r.train.packing is False and r.train.merge is True
    assert r.train.learning_rate == 1e-4  # untouched keys keep the recipe's values
    assert r.sha256 != base.sha256
    assert load_config("qwen2.5-3b", ["--seed", "1"]).train.seed == 1  # a key unique to one section needs no section
    assert load_config("qwen2.5-3b", ["--train.report_to", "wandb"]).train.report_to == ["wandb"]
    assert parse_overrides(["--a.b", "1", "--flag", "--c=d"]) == [("a.b", "1"), ("flag", "true"), ("c", "d")]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--train.max_stepz", "5"], "unknown key 'max_stepz'"),
        (["--train.max_steps", "many"], "train.max_steps: expected int, got 'many'"),
        (["--lora.dropout", "1.5"], "lora.dropout in [0, 1)"),
        (["--bogus", "1"], "override '--bogus': unknown key"),
        (["--data.eval_fraction", "1"], "data.eval_fraction must be in [0, 1)"),
        (["--model.dtype", "int8"], "model.dtype must be"),
        (["--warmup_ratio", "10"], "train.warmup_ratio must be in [0, 1)"),
        (["stray"], "override 'stray': expected --KEY VALUE"),
        (["--data.assistant_format", "<think>{reasoning}</think> {response}"], "set data.messages: null"),
    ],
)
def test_bad_overrides_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("qwen2.5-3b", overrides)


def test_bad_recipe_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"recipe.yaml: unknown key 'trian'"):
        load_config(str(_write(tmp_path, {"trian": {}})))
    with pytest.raises(ConfigError, match=r"recipe.yaml: lora: unknown key 'rank' \(known: r, alpha"):
        load_config(str(_write(tmp_path, {"lora": {"rank": 8}})))
    with pytest.raises(ConfigError, match=r"data.max_per_source.medqa: expected int"):
        load_config(str(_write(tmp_path, {"data": {"max_per_source": {"medqa": "x"}}})))
    (tmp_path / "broken.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(tmp_path / "broken.yaml"))
    with pytest.raises(
        ConfigError, match=r"no such recipe file or bundled recipe \(bundled: llama3\.1-8b, qwen2\.5-14b"
    ):
        load_config("qwen9")


def test_cli_reports_config_errors_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"train": {"max_steps": "soon"}})
    assert cli.main(["sft", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"medr1-train: error: {path}: train.max_steps: expected int, got 'soon'\n"

    assert cli.main(["sft", "--config", "qwen2.5-7b", "--lora.alpha", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medr1-train: error: ") and "lora.alpha must be >= 1" in err and "\n" not in err

    assert cli.main(["train", "--config", "x"]) == 2
    assert capsys.readouterr().err == "medr1-train: error: unknown command 'train'; choose from sft, export\n"


def test_cli_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "sft" in out and "export" in out
    assert set(cli.SUBCOMMANDS) == {"sft", "export"}
