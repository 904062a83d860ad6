"""Model cards for trained students (LoRA adapters and merged models): dataset revision, recipe and numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVAL_COMMAND = "medr1-eval --model hf --model_args pretrained={base},peft={adapter} --tasks medr1 --apply_chat_template"


def _hub_dataset_id(ref: dict[str, Any]) -> str | None:
    ds = str(ref.get("dataset") or "")
    return ds if ds.count("/") == 1 and not Path(ds).exists() else None


def model_card(
    *,
    base_model: str,
    dataset_ref: dict[str, Any],
    recipe: dict[str, Any] | None = None,
    recipe_name: str | None = None,
    recipe_sha256: str | None = None,
    stats: dict[str, Any] | None = None,
    kind: str = "adapter",
    title: str | None = None,
    usage: str | None = None,
    extra_sections: dict[str, str] | None = None,
    tags: list[str] | None = None,
    library_name: str | None = None,
) -> str:
    """The README.md text of a model card: YAML header (base model, dataset, tags) and the training provenance.

    `kind` is `adapter` (a peft LoRA adapter) or `merged` (a full model); `dataset_ref` is what `medr1_train.data`
    records (`dataset`, `revision`, and for a local release the build recipe's name, version and SHA-256);
    `library_name` overrides the Hub library the header names (e.g. `gguf`).
    """
    from huggingface_hub import ModelCard, ModelCardData

    if kind not in ("adapter", "merged"):
        raise ValueError(f"kind must be 'adapter' or 'merged', got {kind!r}")
    hub_ds = _hub_dataset_id(dataset_ref)
    data = ModelCardData(
        base_model=base_model,
        library_name=library_name or ("peft" if kind == "adapter" else "transformers"),
        datasets=[hub_ds] if hub_ds else None,
        pipeline_tag="text-generation",
        tags=[*(tags or []), "medr1", "medical", "reasoning", "distillation", "sft", "trl"]
        + (["lora"] if kind == "adapter" else []),
    )
    name = title or f"{base_model.rstrip('/').split('/')[-1]} MedR1 {'LoRA adapter' if kind == 'adapter' else 'model'}"
    lines = [
        f"# {name}",
        "",
        f"{'A LoRA adapter for' if kind == 'adapter' else 'A fine-tune of'} `{base_model}`, distilled on MedR1 "
        "medical multiple-choice reasoning traces with `medr1-train sft`. It thinks inside `<think>…</think>` and "
        "commits to one option as `<answer>X</answer>`.",
        "",
        "## Training data",
        "",
        f"- Dataset: `{dataset_ref.get('dataset')}`",
        f"- Revision: `{dataset_ref.get('revision') or 'unpinned'}`",
    ]
    if dataset_ref.get("commit"):
        lines.append(f"- Commit: `{dataset_ref['commit']}`")
    for key in ("recipe_name", "recipe_version", "recipe_sha256"):
        if dataset_ref.get(key):
            lines.append(
                f"- Dataset build {key.removeprefix('recipe_').replace('sha256', 'recipe SHA-256')}: "
                f"`{dataset_ref[key]}`"
            )
    if stats:
        lines += ["", "| count | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in stats.items() if v is not None]
    if recipe_name or recipe:
        lines += ["", "## Training recipe", ""]
    if recipe_name:
        lines.append(f"- Recipe: `{recipe_name}`" + (f" (SHA-256 `{recipe_sha256}`)" if recipe_sha256 else ""))
    if recipe:
        lines += ["", "```json", json.dumps(recipe, indent=2, sort_keys=True, default=str), "```"]
    lines += ["", "## Use", ""]
    if usage is None:
        if kind == "adapter":
            command = EVAL_COMMAND.format(base=base_model, adapter="PATH_OR_REPO_OF_THIS_ADAPTER")
        else:
            command = EVAL_COMMAND.replace(",peft={adapter}", "").format(base="PATH_OR_REPO_OF_THIS_MODEL")
        usage = f"Evaluate on the MedR1 benchmark tasks (lm-eval):\n\n```bash\n{command}\n```"
    lines.append(usage)
    for heading, body in (extra_sections or {}).items():
        lines += ["", f"## {heading}", "", body.strip()]
    lines += [
        "",
        "## Limitations",
        "",
        "A research artefact for medical question answering benchmarks; not a medical device and not medical advice.",
        "",
    ]
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n" + "\n".join(lines)).content


def write_model_card(out: Path | str, **kwargs: Any) -> Path:
    """Write `model_card(**kwargs)` to `out/README.md` and return its path."""
    path = Path(out) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(**kwargs), encoding="utf-8")
    return path
