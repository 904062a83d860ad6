"""Build recipes: the YAML sections of one build as typed dataclasses, read by `medr1_data.config`.

A recipe names its sources, the teacher, each stage's settings, the output and the card, and the stages to run
(`STAGE_NAMES`, in this order by default). `medr1_data/build.py` runs it; `medr1_data/stages.py` holds the stages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medr1_data import canonical_sha256, config
from medr1_data.benchmarks import DEFAULT_BENCHMARKS
from medr1_data.config import ConfigError
from medr1_data.decontam import DecontamSettings
from medr1_data.dedup import DedupSettings
from medr1_data.prompts import get_template
from medr1_data.score import ScoreSettings
from medr1_data.select import SelectSettings
from medr1_data.shards import ShardSettings
from medr1_data.teacher.presets import expand_preset
from medr1_data.teacher.settings import TeacherSettings

RECIPES_DIR = Path(__file__).parent / "recipes"
# Question-level stages run before the teacher, so no request is paid for a benchmark item or a duplicate.
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")  # the release tag is v<version>
STAGE_NAMES = ("ingest", "decontam", "dedup", "distill", "verify", "score", "select", "shards", "card")


@dataclass
class SourceSpec:
    """One source split to ingest: `spec` is `NAME` (Hub) or `NAME=PATH` (relative to the recipe file)."""

    spec: str
    split: str = "train"


@dataclass
class DecontamRecipe:
    """The recipe's `decontam` section: benchmark specs (relative paths resolved) and DecontamSettings overrides."""

    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    benchmark_dir: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def parsed(self, origin: str = "recipe") -> DecontamSettings:
        """The settings as DecontamSettings (checked when the recipe is loaded)."""
        return config.build(DecontamSettings, self.settings, origin, "decontam.settings")


@dataclass
class DedupRecipe:
    """The recipe's `dedup` section: DedupSettings overrides."""

    settings: dict[str, Any] = field(default_factory=dict)

    def parsed(self, origin: str = "recipe") -> DedupSettings:
        """The settings as DedupSettings (checked when the recipe is loaded)."""
        return config.build(DedupSettings, self.settings, origin, "dedup.settings")


@dataclass
class CardSettings:
    """The recipe's `card` section."""

    pretty_name: str = "MedR1 reasoning"
    repo_id: str = "medr1/reasoning"
    license: str = "mit"
    summary: str = ""
    demo_notice: str = ""
    changelog: list[str] = field(default_factory=list)


@dataclass
class Recipe:
    """A whole build: sources, teacher, selection, output and card, plus the stages to run in order."""

    name: str
    version: str
    sources: list[SourceSpec]
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    decontam: DecontamRecipe = field(default_factory=DecontamRecipe)
    dedup: DedupRecipe = field(default_factory=DedupRecipe)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    select: SelectSettings = field(default_factory=SelectSettings)
    output: ShardSettings = field(default_factory=ShardSettings)
    card: CardSettings = field(default_factory=CardSettings)
    stages: list[str] = field(default_factory=lambda: list(STAGE_NAMES))
    description: str = ""
    base_dir: Path = Path(".")
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """SHA-256 of the recipe as read (overrides applied), canonical JSON."""
        return canonical_sha256(self.raw)

    def resolve(self, path: str) -> Path:
        """A path from the recipe, relative to the recipe file's folder unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def spec_path(self, spec: str) -> Path | None:
        """The resolved PATH of a `NAME=PATH` source or benchmark spec; None for a bare NAME."""
        _, sep, path = spec.partition("=")
        return self.resolve(path) if sep and path else None


def find_recipe(name_or_path: str) -> Path:
    """A bundled recipe by name (`demo`, `medr1-170k`) or a YAML file path."""
    return config.find_recipe(name_or_path, RECIPES_DIR)


def load_recipe(name_or_path: str = "demo", overrides: list[str] | None = None) -> Recipe:
    """Read a recipe, apply `KEY=VALUE` overrides and check every key, type and stage name."""
    path = find_recipe(name_or_path)
    raw = config.apply_overrides(config.read_yaml(path), [config.split_override(o) for o in overrides or []])
    where = str(path)
    for key in ("name", "version", "sources"):
        if key not in raw:
            raise ConfigError(f"{where}: missing key '{key}'")
    if not isinstance(raw["sources"], list) or not raw["sources"]:
        raise ConfigError(f"{where}: 'sources' must be a non-empty list")
    if "teacher" in raw:  # a preset's values fill the teacher keys the recipe leaves out (kept in the recipe's hash)
        raw["teacher"] = expand_preset(raw["teacher"], where)
    recipe = config.build(Recipe, raw, where, skip=("base_dir", "raw"))
    recipe.base_dir, recipe.raw = path.resolve().parent, raw
    unknown = [s for s in recipe.stages if s not in STAGE_NAMES]
    if unknown:
        raise ConfigError(f"{where}: unknown stage '{unknown[0]}' (stages: {', '.join(STAGE_NAMES)})")
    for section in (recipe.decontam, recipe.dedup):
        section.parsed(where)
    if not SEMVER.fullmatch(recipe.version):
        raise ConfigError(f"{where}: version: expected MAJOR.MINOR.PATCH (e.g. 1.2.0), got {recipe.version!r}")
    get_template(recipe.teacher.template)
    return recipe
