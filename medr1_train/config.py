"""Training recipes: YAML read into dataclasses, with `--section.key value` overrides from the command line."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medr1_data import Medr1Error, canonical_sha256

RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_ASSISTANT_FORMAT = "<think>{reasoning}</think>\n<answer>{answer_label}</answer>"


class ConfigError(Medr1Error):
    """A recipe or override that cannot be used: reported as one line naming the file and key."""


@dataclass
class ModelConfig:
    """The student: a Hub id or local folder, its revision, dtype and attention kernel."""

    name_or_path: str = "Qwen/Qwen2.5-7B-Instruct"
    revision: str | None = None
    dtype: str = "auto"  # auto: bfloat16 on a GPU that supports it, float32 otherwise
    attn_implementation: str | None = "sdpa"  # flash_attention_2 where installed: varlen kernels for packing
    load_in_4bit: bool = False  # QLoRA (needs bitsandbytes and a CUDA GPU)
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    """Which release rows become training examples, and how they are rendered and split."""

    dataset: str = "medr1/reasoning"  # Hub dataset id, or a local release folder (data/*.parquet)
    revision: str | None = None  # Hub revision (tag or commit); pin it so the run is reproducible
    split: str = "train"
    template: str = "medr1-mcq-v1"  # the prompt template shared with the eval tasks
    assistant_format: str = DEFAULT_ASSISTANT_FORMAT  # fields: any column of the release (reasoning, response, ...)
    require_correct: bool = True  # keep only rows with is_correct
    min_quality: float = 0.0  # keep rows with quality_score >= this
    drop_contaminated: bool = True
    sources: list[str] | None = None  # keep only these sources (null: all)
    max_per_source: dict[str, int] = field(default_factory=dict)  # cap rows per source (deterministic sample)
    max_samples_per_question: int | None = None  # cap teacher samples kept per question
    eval_fraction: float = 0.02  # fraction of question ids held out for evaluation
    max_length: int = 4096  # longer examples are dropped (and counted), never cut
    max_rows: int | None = None  # cap on training rows after filtering (smoke runs)
    num_proc: int | None = None


@dataclass
class LoraSettings:
    """peft LoRA settings; `all-linear` targets every linear projection but the LM head."""

    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    use_rslora: bool = False


@dataclass
class TrainSettings:
    """Optimisation, batching, checkpointing and outputs."""

    output_dir: str = "runs/medr1-sft"
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 1
    per_device_eval_batch_size: int = 1
    gradient_accumulation_steps: int = 16
    learning_rate: float = 1e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    packing: bool = True  # several examples per sequence, attention kept inside each (position ids reset)
    group_by_length: bool = True  # when packing is off: batch examples of similar length
    gradient_checkpointing: bool = True
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int | None = 3
    eval_steps: int | None = 200  # null: no evaluation during training
    seed: int = 42
    resume: bool = True  # continue from the last checkpoint in output_dir when one is there
    merge: bool = False  # also save the base model with the adapter merged in (output_dir/merged)
    report_to: list[str] = field(default_factory=lambda: ["none"])
    dataloader_num_workers: int = 0
    use_cpu: bool = False


@dataclass
class SFTRecipe:
    """A whole training recipe."""

    name: str = "medr1-sft"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    source: str = ""  # the file it was read from
    raw: dict[str, Any] = field(default_factory=dict)  # the mapping as read, overrides applied

    @property
    def sha256(self) -> str:
        """SHA-256 of the recipe as read (overrides applied), canonical JSON."""
        return canonical_sha256(self.raw)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (every default filled in), for logs and the model card."""
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS} | {"name": self.name}


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "lora": LoraSettings, "train": TrainSettings}


def find_recipe(name_or_path: str) -> Path:
    """A bundled recipe by name (`qwen2.5-7b`) or a YAML file path."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = RECIPES_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise ConfigError(f"{name_or_path}: no such recipe file or bundled recipe (bundled: {names})")


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    """`--a.b value`, `--a.b=value` and bare `--flag` (true) into (key, raw value) pairs."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or len(item) == 2:
            raise ConfigError(f"override '{item}': expected --KEY VALUE, e.g. --train.max_steps 100")
        key, sep, value = item[2:].partition("=")
        if not sep:
            if i + 1 < len(items) and not items[i + 1].startswith("--"):
                value = items[i + 1]
                i += 1
            else:
                value = "true"
        pairs.append((key.replace("-", "_"), value))
        i += 1
    return pairs


def _section_of(key: str, raw: dict[str, Any]) -> list[str]:
    parts = key.split(".")
    if len(parts) > 1 or key in ("name", "description"):
        return parts
    owners = [s for s, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(owners) == 1:
        return [owners[0], key]
    if not owners:
        raise ConfigError(f"override '--{key}': unknown key (use SECTION.KEY; sections: {', '.join(SECTIONS)})")
    raise ConfigError(f"override '--{key}': ambiguous, say which: {', '.join(f'{o}.{key}' for o in owners)}")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `--section.key value` overrides (value parsed as YAML) to a recipe mapping."""
    raw = copy.deepcopy(raw)
    for key, value in parse_overrides(overrides):
        parts = _section_of(key, raw)
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '--{key}': '{part}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[parts[-1]] = value
    return raw


def _check(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type hint (ints accepted for floats); a ConfigError naming `where` otherwise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if hint is Any:
        return value
    if origin is list:
        if isinstance(value, str):  # `--train.report_to wandb` means a one-item list
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(hint)
        return [_check(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        k_t, v_t = typing.get_args(hint)
        return {_check(k, k_t, where): _check(v, v_t, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def build_section(cls: type, data: Any, where: str) -> Any:
    """A section dataclass from a mapping: unknown keys and wrong types are one-line errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(names)})")
    return cls(**{k: _check(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def validate(recipe: SFTRecipe, where: str) -> None:
    """Cross-field checks a dataclass cannot express."""
    d, t, lora = recipe.data, recipe.train, recipe.lora
    if not 0.0 <= d.eval_fraction < 1.0:
        raise ConfigError(f"{where}: data.eval_fraction must be in [0, 1), got {d.eval_fraction}")
    if d.max_length < 16:
        raise ConfigError(f"{where}: data.max_length must be at least 16, got {d.max_length}")
    if not 0.0 <= d.min_quality <= 1.0:
        raise ConfigError(f"{where}: data.min_quality must be in [0, 1], got {d.min_quality}")
    for src, cap in d.max_per_source.items():
        if cap < 1:
            raise ConfigError(f"{where}: data.max_per_source.{src} must be at least 1, got {cap}")
    if "{" not in d.assistant_format:
        raise ConfigError(f"{where}: data.assistant_format has no {{field}}; e.g. {DEFAULT_ASSISTANT_FORMAT!r}")
    if lora.r < 1 or lora.alpha < 1 or not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"{where}: lora.r and lora.alpha must be >= 1 and lora.dropout in [0, 1)")
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{where}: train.{name} must be at least 1, got {getattr(t, name)}")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError(f"{where}: train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
    if t.max_steps == 0 or (t.max_steps < 0 and t.num_train_epochs <= 0):
        raise ConfigError(f"{where}: set train.max_steps > 0 or train.num_train_epochs > 0")
    if recipe.model.dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ConfigError(f"{where}: model.dtype must be auto, bfloat16, float16 or float32, got {recipe.model.dtype}")


def load_config(name_or_path: str, overrides: list[str] | None = None) -> SFTRecipe:
    """Read a training recipe, apply `--key value` overrides and check every key and type."""
    path = find_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    where = str(path)
    known = ["name", "description", *SECTIONS]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(known)})")
    sections = {s: build_section(cls, raw.get(s), f"{where}: {s}") for s, cls in SECTIONS.items()}
    recipe = SFTRecipe(
        name=_check(raw.get("name", path.stem), str, f"{where}: name"),
        description=_check(raw.get("description", ""), str, f"{where}: description"),
        source=str(path),
        raw=raw,
        **sections,
    )
    validate(recipe, where)
    return recipe
