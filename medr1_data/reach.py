"""Whether what a build reads from the network can be reached: the Hub, the teacher's endpoint."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from medr1_data import Medr1Error
from medr1_data.recipe import Recipe


def unreachable(url: str) -> str | None:
    """Why `url`'s host cannot be reached from here (a TCP connect to its port), or None."""
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=5).close()
    except OSError as e:
        return f"{parts.hostname} cannot be reached ({type(e).__name__})"
    return None


def hub_unreachable() -> str | None:
    """Why the Hub cannot be reached from here (HF_HUB_OFFLINE, or no route to its host), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    return unreachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def require_hub(recipe: Recipe, needs: list[str], local_way: str) -> None:
    """Stop at once, naming what needs the Hub and how to run from local files, when the Hub is out of reach."""
    if not needs:
        return
    why = hub_unreachable()
    if why:
        raise Medr1Error(
            f"recipe {recipe.name} reads {', '.join(needs)} from the Hub, but {why}; to run from local files, "
            f"{local_way}"
        )


def require_teacher(recipe: Recipe) -> None:
    """Stop at once when the recipe's teacher cannot answer (no key, no route) and its cache holds no response."""
    from medr1_data.teacher import ResponseCache
    from medr1_data.teacher.client import api_key

    t = recipe.teacher
    cache = ResponseCache(recipe.resolve(t.cache))
    if t.offline or t.endpoint in ("recorded", "dataset") or (cache.path.is_file() and cache.path.stat().st_size):
        return
    local = "to run without a teacher, import responses into the cache or set teacher.offline=true"
    try:
        api_key(t)
        why = unreachable(t.url())
    except Medr1Error as e:
        why = str(e)
    if why:
        raise Medr1Error(f"recipe {recipe.name} asks the teacher {t.model} at {t.url()}, but {why}; {local}")
