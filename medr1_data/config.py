"""Recipes: YAML read into typed dataclasses, with overrides. One loader for `medr1-data` and `medr1-train`.

Lookup (`find_recipe`): an argument with a `/` or a `.yaml`/`.yml` suffix is a file path; any other argument is the
name of a bundled recipe. The two never shadow each other: a bundled name always means the bundled recipe, and a
local file is read by giving its path (`./demo.yaml`).

Overrides are `KEY.PATH=VALUE` strings (`medr1-data --set`, and `medr1-train`'s `--key.path value` options, which
`flag_overrides` turns into the same pairs). VALUE is read as YAML (`4`, `true`, `[a, b]`, `{medqa: 3}`); text that is
not valid YAML is taken as the string it is. Every value, from the file or an override, is then checked against its
field's type hint by `build`; a mismatch is a ConfigError naming the file and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from medr1_data import Medr1Error

Bounds = dict[str, tuple[float | None, float | None]]  # a settings class's `BOUNDS`: field -> (lo, hi), inclusive


class ConfigError(Medr1Error):
    """A recipe or override that cannot be used: reported as one line naming the file and key."""


def find_recipe(name_or_path: str, bundled_dir: Path) -> Path:
    """A bundled recipe by name (no `/`, no YAML suffix) or a YAML file by path."""
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")) or Path(text).is_absolute():
        path = Path(text).expanduser()
        if path.is_file():
            return path
        raise ConfigError(f"{text}: no such recipe file")
    bundled = bundled_dir / f"{text}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in bundled_dir.glob("*.yaml")))
    hint = f"; to read the file '{text}', give its path: ./{text}" if Path(text).is_file() else ""
    raise ConfigError(f"{text}: no such recipe file or bundled recipe (bundled: {names}){hint}")


def read_yaml(path: Path) -> dict[str, Any]:
    """A recipe file's top-level mapping (empty file: {})."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def parse_value(text: str) -> Any:
    """An override's VALUE read as YAML; text that is not valid YAML is the string itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_override(item: str) -> tuple[str, str]:
    """`KEY.PATH=VALUE` into (key, raw value)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. teacher.samples=4")
    return key.strip(), value


def flag_overrides(items: list[str]) -> list[tuple[str, str]]:
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


def apply_overrides(
    raw: dict[str, Any],
    pairs: list[tuple[str, str]],
    resolve: Callable[[str], list[str]] | None = None,
    show: Callable[[str, str], str] = lambda k, v: f"{k}={v}",
) -> dict[str, Any]:
    """A copy of `raw` with each (dotted key, raw value) set; `resolve` maps a key to its path (default: split on .)."""
    raw = copy.deepcopy(raw)
    for key, value in pairs:
        parts = resolve(key) if resolve else key.split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{show(key, value)}': '{part}' is not a section")
        node[parts[-1]] = parse_value(value)
    return raw


def _at(origin: str, key: str) -> str:
    return f"{origin}: {key}" if key else origin


def _union(value: Any, args: tuple[Any, ...], origin: str, key: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return check(value, arg, origin, key)
        except ConfigError as e:
            errors.append(e)
    raise errors[0]


def _sequence(value: Any, hint: Any, origin: str, key: str) -> Any:
    origin_type = typing.get_origin(hint)
    if isinstance(value, str):  # `--train.report_to wandb` means a one-item list
        value = [value]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ConfigError(f"{_at(origin, key)}: expected a list, got {value!r}")
    args = typing.get_args(hint)
    inner = args[0] if args else Any
    items = [check(v, inner, origin, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin_type is tuple else items


def _scalar(value: Any, hint: Any, origin: str, key: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{_at(origin, key)}: expected {hint.__name__}, got {value!r}")
    return value


def check(value: Any, hint: Any, origin: str, key: str = "") -> Any:
    """`value` checked against a type hint (ints accepted for floats); a ConfigError naming `origin: key` otherwise."""
    kind = typing.get_origin(hint)
    if hint is Any:
        return value
    if kind in (typing.Union, types.UnionType):
        return _union(value, typing.get_args(hint), origin, key)
    if kind is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{_at(origin, key)}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if kind in (list, tuple):
        return _sequence(value, hint, origin, key)
    if kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_at(origin, key)}: expected a mapping, got {value!r}")
        k_t, v_t = typing.get_args(hint)
        return {check(k, k_t, origin, key): check(v, v_t, origin, f"{key}.{k}".lstrip(".")) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return build(hint, value, origin, key)
    if hint is Path:
        return Path(_scalar(value, str, origin, key))
    return _scalar(value, hint, origin, key)


def build(cls: type, data: Any, origin: str, key: str = "", skip: tuple[str, ...] = ()) -> Any:
    """A dataclass from a mapping, every field checked against its type; unknown keys are one-line errors.

    `skip`: fields that are not read from the mapping (set by the caller, e.g. the file a recipe came from).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_at(origin, key)}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{_at(origin, key)}: unknown key '{unknown[0]}' (known: {', '.join(names)})")
    sub = f"{key}." if key else ""
    obj = cls(**{k: check(v, hints[k], origin, f"{sub}{k}") for k, v in data.items()})
    check_limits(obj, origin, key)
    return obj


def _in_range(value: Any, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def check_limits(obj: Any, origin: str, key: str = "") -> None:
    """A dataclass's `BOUNDS` ({field: (lo, hi)}, inclusive, None open) and `CHOICES` ({field: allowed values}, for a
    string, each item of a list, each key of a mapping), checked; a ConfigError naming the key otherwise."""
    sub = f"{key}." if key else ""
    for name, (lo, hi) in getattr(obj, "BOUNDS", {}).items():
        value = getattr(obj, name)
        values = value.values() if isinstance(value, dict) else [value]
        for v in values:
            if v is not None and not _in_range(v, lo, hi):
                want = f"at least {lo}" if hi is None else f"at most {hi}" if lo is None else f"in [{lo}, {hi}]"
                raise ConfigError(f"{origin}: {sub}{name}: expected a value {want}, got {v!r}")
    for name, allowed in getattr(obj, "CHOICES", {}).items():
        value = getattr(obj, name)
        items = list(value) if isinstance(value, list | tuple | dict) else [value]
        bad = [v for v in items if v not in allowed]
        if bad:
            raise ConfigError(f"{origin}: {sub}{name}: '{bad[0]}' is not one of {', '.join(map(str, allowed))}")


def require(ok: bool, where: str, message: str) -> None:
    """Raise a ConfigError `where: message` unless `ok` (cross-field and range checks)."""
    if not ok:
        raise ConfigError(f"{where}: {message}")


def missing_local_path(name_or_path: str) -> str | None:
    """A one-line problem when `name_or_path` is written as a local path (`/`, `./`, `../`, `~`) that does not exist."""
    text = str(name_or_path)
    if text.startswith(("/", "./", "../", "~")) and not Path(text).expanduser().exists():
        return f"'{text}': no such local folder (a Hub id looks like ORG/NAME)"
    return None
