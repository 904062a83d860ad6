"""Shared helpers of the training tests (no tests here): a real-shaped release, tiny-model recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from medr1_data.schema import OPTION
from medr1_data.shards import ShardSettings, write_manifest, write_shards


def build_demo_release(folder: Path) -> Path:
    """The demo release as `medr1-data build` writes it (25 verified, scored traces of real-shaped questions)."""
    from medr1_data.build import run
    from medr1_data.recipe import load_recipe

    out = folder / "medr1-reasoning"
    run(load_recipe("demo"), out=out, quiet=True)
    return out


def write_release(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """A release folder (shards and manifest, as `medr1-data build` writes them) of `rows`, with the release's types."""
    defaults = {
        "source": "medqa",
        "context": None,
        "sample_idx": 0,
        "reasoning": "Short reasoning.",
        "response": "So <answer>A</answer>",
        "is_correct": True,
        "quality_score": 1.0,
        "contaminated": False,
        "answer_label": "A",
        "options": [{"label": "A", "text": "yes"}, {"label": "B", "text": "no"}],
    }
    full = [{**defaults, **r} for r in rows]
    for r in full:  # a release id starts with its source's name (`<source>/<split>/<source_id>`)
        r["id"] = f"{r['source']}/train/{r['id']}"
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("question", pa.string()),
            ("options", pa.list_(OPTION)),
            ("answer_label", pa.string()),
            ("context", pa.string()),
            ("sample_idx", pa.int32()),
            ("reasoning", pa.string()),
            ("response", pa.string()),
            ("is_correct", pa.bool_()),
            ("quality_score", pa.float64()),
            ("contaminated", pa.bool_()),
        ]
    )
    table = pa.Table.from_pylist(full, schema=schema)
    files = write_shards(table, folder, ShardSettings())
    write_manifest(folder, files, table.schema, {"name": "t", "version": "1"}, "ab")
    return folder


def tiny_recipe(path: Path, model: Path, dataset: Path, output_dir: Path, **sections: dict[str, Any]) -> Path:
    """A training recipe for the tiny model: small LoRA, fast CPU settings; `sections` update it."""
    recipe: dict[str, Any] = {
        "name": "tiny-test",
        "model": {"name_or_path": str(model), "dtype": "float32"},
        "data": {"dataset": str(dataset), "max_length": 1024, "eval_fraction": 0.1},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {
            "output_dir": str(output_dir),
            "max_steps": 6,
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "learning_rate": 5e-3,
            "warmup_ratio": 0.0,
            "logging_steps": 1,
            "save_steps": 3,
            "eval_steps": None,
            "gradient_checkpointing": False,
            "use_cpu": True,
        },
    }
    for section, values in sections.items():
        recipe[section] = {**recipe.get(section, {}), **values}
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def build_fit_model(tiny_model: Path, out: Path) -> Path:
    """A copy of the tiny model with its (tied) embeddings scaled up 6x.

    At the initializer's 0.02 std the output logits stay within about ±1.3 of each other whatever the hidden state,
    so no adapter can move the loss far from uniform; trained checkpoints have larger embeddings than that.
    """
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_model, out, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(6.0)
    model.save_pretrained(out)
    return out
