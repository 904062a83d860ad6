"""Training recipes: the sections of an SFT run as dataclasses, read by `medr1_data.config` (one loader for both
packages) with `--section.key value` overrides from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medr1_data import canonical_sha256, config
from medr1_data.config import Bounds, ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_ASSISTANT_FORMAT = "<think>{reasoning}</think>\n<answer>{answer_label}</answer>"


@dataclass
class ModelConfig:
    """The student: a Hub id or local folder, its revision, dtype and attention kernel."""

    name_or_path: str = "Qwen/Qwen2.5-7B-Instruct"
    revision: str | None = None
    dtype: str = "auto"  # auto: bfloat16 on a GPU that supports it, float32 otherwise
    attn_implementation: str | None = "sdpa"  # flash_attention_2 where installed: varlen kernels for packing
    load_in_4bit: bool = False  # QLoRA (needs bitsandbytes and a CUDA GPU)
    trust_remote_code: bool = False
    # A Jinja chat template replacing the student's (inline text, or a `.jinja` file relative to the recipe); it is
    # saved with the adapter and the exported models. With `{% generation %}` markers the loss covers what they mark.
    chat_template: str | None = None

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {  # dtype is checked in `validate`
        "attn_implementation": ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention"),
    }


@dataclass
class DataConfig:
    """Which release rows become training examples, and how they are rendered and split."""

    dataset: str = "medr1/reasoning"  # Hub dataset id, or a local release folder (data/*.parquet)
    revision: str | None = None  # Hub revision (tag or commit); pin it so the run is reproducible
    split: str = "train"
    # The release's chat column trained on (the assistant's `reasoning_content` is put inline, <think>...</think>);
    # null, or a release without that column: conversations rendered with `template` and `assistant_format`.
    messages: str | None = "messages"
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

    BOUNDS: ClassVar[Bounds] = {
        **{k: (1, None) for k in ("max_samples_per_question", "max_rows", "num_proc", "max_per_source")},
        "min_quality": (0.0, 1.0),
        "max_length": (16, None),
    }


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

    BOUNDS: ClassVar[Bounds] = {
        **{k: (0.0, None) for k in ("num_train_epochs", "weight_decay", "max_grad_norm", "dataloader_num_workers")},
        **{k: (1, None) for k in ("save_total_limit", "eval_steps", "per_device_eval_batch_size")},
        "learning_rate": (1e-12, None),
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "lr_scheduler_type": (
            "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
            "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay",
        ),
    }  # fmt: skip


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

    def chat_template_file(self) -> Path | None:
        """The `.jinja` file `model.chat_template` names (relative to the recipe's folder), or None for inline text."""
        value = (self.model.chat_template or "").strip()
        if not value.endswith(".jinja") or "\n" in value or "{" in value:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.source).parent / path

    def chat_template(self) -> str | None:
        """The chat template the recipe gives the student (the file's text, or the inline text), or None."""
        file = self.chat_template_file()
        return file.read_text(encoding="utf-8") if file else self.model.chat_template


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "lora": LoraSettings, "train": TrainSettings}


def find_recipe(name_or_path: str) -> Path:
    """A bundled recipe by name (`qwen2.5-7b`) or a YAML file path (the rule of `medr1_data.config.find_recipe`)."""
    return config.find_recipe(name_or_path, RECIPES_DIR)


def parse_overrides(items: list[str]) -> list[tuple[str, str]]:
    """`--a.b value`, `--a.b=value` and bare `--flag` (true) into (key, raw value) pairs."""
    return config.flag_overrides(items)


def _section_of(key: str) -> list[str]:
    """The path of an override key: `section.key`, or a bare key that exactly one section has."""
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
    return config.apply_overrides(raw, parse_overrides(overrides), _section_of, lambda k, v: f"--{k}")


def validate(recipe: SFTRecipe, where: str) -> None:
    """Cross-field checks a dataclass cannot express."""
    d, t, lora = recipe.data, recipe.train, recipe.lora
    if not 0.0 <= d.eval_fraction < 1.0:
        raise ConfigError(f"{where}: data.eval_fraction must be in [0, 1), got {d.eval_fraction}")
    if "{" not in d.assistant_format:
        raise ConfigError(f"{where}: data.assistant_format has no {{field}}; e.g. {DEFAULT_ASSISTANT_FORMAT!r}")
    if d.messages is not None and d.assistant_format != DEFAULT_ASSISTANT_FORMAT:
        raise ConfigError(
            f"{where}: data.assistant_format renders conversations, but data.messages reads them from the release "
            f"column '{d.messages}'; set data.messages: null to render them with data.assistant_format"
        )
    file = recipe.chat_template_file()
    if file is not None and not file.is_file():
        raise ConfigError(f"{where}: model.chat_template: no such file {file}")
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
    raw = apply_overrides(config.read_yaml(path), overrides or [])
    where = str(path)
    recipe = config.build(SFTRecipe, {"name": path.stem, **raw}, where, skip=("source", "raw"))
    recipe.source, recipe.raw = str(path), raw
    validate(recipe, where)
    return recipe
