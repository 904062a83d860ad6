"""Source registry: name -> Source, filled by `@register` in-tree and by the `medr1.sources` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from medr1_data import Medr1Error
from medr1_data.sources.base import Loaded, Question, Source, SourceRow, load_rows
from medr1_data.sources.readers import RowError

REGISTRY: dict[str, type[Source]] = {}
ENTRY_POINT_GROUP = "medr1.sources"


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: add a Source to the registry under its `name`."""
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"source '{cls.name}' is registered twice")
    REGISTRY[cls.name] = cls
    return cls


_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as e:  # a broken plugin must not take the in-tree sources down with it
            raise Medr1Error(f"source plugin '{ep.name}' ({ep.value}) failed to import: {e}") from None
        REGISTRY.setdefault(ep.name, cls)


def get_source(name: str) -> Source:
    """The registered source called `name`, or a Medr1Error listing the known ones."""
    _load_plugins()
    if name not in REGISTRY:
        raise Medr1Error(f"unknown source '{name}'; registered: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]()


def all_sources() -> dict[str, type[Source]]:
    """Every registered source, plugins included, by name."""
    _load_plugins()
    return dict(sorted(REGISTRY.items()))


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """`NAME` (the Hub copy) or `NAME=PATH` (a local file or folder in the native format, or Hub-layout Parquet)."""
    name, sep, path = spec.partition("=")
    if sep and not path:
        raise Medr1Error(f"source spec '{spec}': empty path after '='")
    return name.strip(), Path(path) if sep else None


def load(spec: str, split: str) -> Loaded:
    """Canonical questions of one source split from a spec (`NAME` or `NAME=PATH`), with rejects."""
    name, path = parse_spec(spec)
    return load_rows(get_source(name), split, path)


from medr1_data.sources import headqa, mcq_jsonl, medmcqa, medqa, mmlu_medical, pubmedqa  # noqa: E402, F401

__all__ = [
    "REGISTRY",
    "Loaded",
    "Question",
    "RowError",
    "Source",
    "SourceRow",
    "all_sources",
    "get_source",
    "load",
    "parse_spec",
    "register",
]
