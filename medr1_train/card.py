"""Model cards of trained students: the adapter and merged-model cards of `sft`, and one per `export` folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medr1_train.export.checks import Variant

EVAL_COMMAND = "medr1-eval --model hf --model_args pretrained={base},peft={adapter} --tasks medr1 --apply_chat_template"
PLACEHOLDER = "PATH_OR_REPO_OF_THIS_MODEL"

# export kind -> (what it is, where it runs), as the exported folders' cards describe it
KIND_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "int8": ("int8 weight-only, per-channel scales (Int8WeightOnlyConfig)", "CPU and CUDA"),
    "int4": ("int4 weight-only, group-wise scales (Int4WeightOnlyConfig, tinygemm)", "CUDA only"),
    "gguf-f16": ("GGUF, F16 weights (norms and biases F32)", "llama.cpp / Ollama, CPU and GPU"),
    "gguf-q8_0": ("GGUF, Q8_0 weights (blocks of 32, one f16 scale)", "llama.cpp / Ollama, CPU and GPU"),
    "gguf-q4_0": (
        "GGUF, Q4_0 weights (blocks of 32, one f16 scale; token embeddings Q8_0)",
        "llama.cpp / Ollama, CPU and GPU",
    ),
}


def _load_code(model_kwargs: str, tokenizer_kwargs: str = "", comment: str = "") -> str:
    """Python that loads `{path}` with Transformers (a template: `{path}`, `{file}` are filled in later)."""
    return (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'tok = AutoTokenizer.from_pretrained("{{path}}"{tokenizer_kwargs})\n'
        f'model = AutoModelForCausalLM.from_pretrained("{{path}}"{model_kwargs}){comment}\n```\n'
    )


LOAD_SNIPPETS = {
    "merged": _load_code(', dtype="auto", device_map="auto"')
    + "\nServe it with vLLM: `vllm serve {path}` (OpenAI-compatible API on port 8000). Evaluate it on the MedR1 "
    "tasks: `medr1-eval --model hf --model_args pretrained={path} --tasks medr1`.\n",
    "int8": "Needs `torchao` (`pip install 'medr1[deploy]'`); the quantization config is stored in `config.json`.\n\n"
    + _load_code(', device_map="cpu"', comment='  # or "cuda"'),
    "int4": "Needs `torchao` and a CUDA GPU (tinygemm int4 kernels).\n\n" + _load_code(', device_map="cuda"'),
    "gguf": "llama.cpp: `llama-cli -m {path}/{file} -cnv` or `llama-server -m {path}/{file}`; "
    "Ollama: a `Modelfile` with `FROM ./{file}`.\n\nTransformers (dequantizes to float32 on load):\n\n"
    + _load_code(', gguf_file="{file}"', ', gguf_file="{file}"'),
}


def _hub_dataset_id(ref: dict[str, Any]) -> str | None:
    ds = str(ref.get("dataset") or "")
    return ds if ds.count("/") == 1 and not Path(ds).exists() else None


def _training_data(dataset_ref: dict[str, Any], stats: dict[str, Any] | None) -> list[str]:
    lines = [
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
    return lines


def _training_recipe(recipe: dict[str, Any] | None, name: str | None, sha256: str | None) -> list[str]:
    lines = ["", "## Training recipe", ""] if name or recipe else []
    if name:
        lines.append(f"- Recipe: `{name}`" + (f" (SHA-256 `{sha256}`)" if sha256 else ""))
    if recipe:
        lines += ["", "```json", json.dumps(recipe, indent=2, sort_keys=True, default=str), "```"]
    return lines


def _eval_usage(kind: str, base_model: str) -> str:
    if kind == "adapter":
        command = EVAL_COMMAND.format(base=base_model, adapter="PATH_OR_REPO_OF_THIS_ADAPTER")
    else:
        command = EVAL_COMMAND.replace(",peft={adapter}", "").format(base=PLACEHOLDER)
    return f"Evaluate on the MedR1 benchmark tasks (lm-eval):\n\n```bash\n{command}\n```"


CARD_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}"


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
    """README.md text of an `adapter` or `merged` student's card: YAML header (base, dataset, tags), provenance."""
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
        *_training_data(dataset_ref, stats),
        *_training_recipe(recipe, recipe_name, recipe_sha256),
        "",
        "## Use",
        "",
        _eval_usage(kind, base_model) if usage is None else usage,
    ]
    for heading, body in (extra_sections or {}).items():
        lines += ["", f"## {heading}", "", body.strip()]
    lines += [
        "",
        "## Limitations",
        "",
        "A research artefact for medical question answering benchmarks; not a medical device and not medical advice.",
        "",
    ]
    # The body is a template variable, never template text: recipe and dataset values are inserted literally.
    body = "\n".join(lines).removesuffix("\n")  # as the template's own last newline was dropped before
    return ModelCard.from_template(data, template_str=CARD_TEMPLATE, body=body).content


def write_model_card(out: Path | str, **kwargs: Any) -> Path:
    """Write `model_card(**kwargs)` to `out/README.md` and return its path."""
    path = Path(out) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(**kwargs), encoding="utf-8")
    return path


def _how_made(folder: str, dtype: str, variants: list[Variant], command: str, versions: dict[str, str]) -> str:
    if folder == "merged":
        made = "The adapter was merged into the base with peft's `merge_and_unload()` and saved with Transformers."
    elif folder == "gguf":
        made = (
            "The merged model was written to GGUF with the `gguf` package (llama.cpp's own Python writer and "
            "quantizers): "
            + "; ".join(f"`{Path(v.path).name}`: {KIND_DESCRIPTIONS[v.kind][0]}" for v in variants)
            + "."
        )
    else:
        what, where = KIND_DESCRIPTIONS[folder]
        made = (
            f"The merged model was quantized with torchao through Transformers' `TorchAoConfig`: {what}; "
            f"runs on {where}. Embeddings and norms stay in `{dtype}`."
        )
    return f"{made}\n\n```bash\n{command}\n```\n\nVersions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."


def _evaluation(evals: dict[str, dict[str, float]]) -> str:
    rows = [f"| {t} | {m} | {v:.4f} |" for t, ms in sorted(evals.items()) for m, v in sorted(ms.items())]
    return (
        "Results of the adapter before export (lm-eval); what quantization costs is measured by "
        "`benchmarks/deploy.py`.\n\n| task | metric | value |\n|---|---|---:|\n" + "\n".join(rows)
    )


def _check_table(variants: list[Variant], generate_tokens: int) -> str:
    lines = [
        "Each file was loaded back with its standard loader; its logits on a fixed chat prompt (system prompt and one "
        "MCQ) were compared with the merged model's (the merged model's with base + adapter, unmerged): relative "
        f"error ‖Δ‖₂/‖ref‖₂ against the documented bound, max |Δ|, agreement of the top token, and {generate_tokens} "
        "greedy tokens were generated.",
        "",
        "| file | size | loader | rel. error | bound | max abs | top-1 agree | generated |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        c = v.check
        if c is not None:
            lines.append(
                f"| {Path(v.path).name} | {v.bytes / 1e6:.1f} MB | {c.loader} | {c.rel_error:.2e} | {c.bound:g} | "
                f"{c.max_abs_error:.3g} | {c.top1_agreement:.3f} | {c.generated_tokens} tokens |"
            )
    return "\n".join(lines)


def _variant_usage(folder: str, variants: list[Variant]) -> str:
    if folder != "gguf":
        return LOAD_SNIPPETS[folder].format(path=PLACEHOLDER)
    files = [Path(v.path).name for v in variants]
    usage = LOAD_SNIPPETS["gguf"].format(path=PLACEHOLDER, file=files[0])
    if len(files) > 1:
        usage += "\nThe other files load the same way: " + ", ".join(f"`{f}`" for f in files[1:])
    return usage


def variant_card(
    *,
    name: str,
    folder: str,
    base: str,
    dtype: str,
    info: dict[str, Any],
    evals: dict[str, dict[str, float]],
    variants: list[Variant],
    command: str,
    versions: dict[str, str],
    generate_tokens: int,
) -> str:
    """README.md of one `medr1-train export` folder: the training card, how it was made, evals and its check."""
    sections = {"How it was made": _how_made(folder, dtype, variants, command, versions)}
    if evals:
        sections["Evaluation"] = _evaluation(evals)
    if any(v.check for v in variants):
        sections["Export check"] = _check_table(variants, generate_tokens)
    recipe = info.get("recipe")
    return model_card(
        base_model=base,
        dataset_ref=info.get("dataset") or {"dataset": "not recorded (the adapter folder has no medr1_train.json)"},
        recipe=recipe,
        recipe_name=(recipe or {}).get("name") or info.get("recipe_file"),
        recipe_sha256=info.get("recipe_sha256"),
        stats=info.get("data_stats"),
        kind="merged",
        title=f"{name} ({folder})",
        usage=_variant_usage(folder, variants),
        extra_sections=sections,
        tags=["merged"] if folder == "merged" else (["gguf"] if folder == "gguf" else [folder, "torchao"]),
        library_name="gguf" if folder == "gguf" else None,
    )
