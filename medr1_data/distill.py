"""Teacher distillation: request keys, the append-only response cache, reasoning parsing and the distill stage."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from medr1_data import Medr1Error
from medr1_data.prompts import get_template
from medr1_data.schema import TRACE_FIELDS, TRACE_SCHEMA, conform

CACHE_FILE = "responses.jsonl"
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)


@dataclass
class TeacherSettings:
    """The recipe's `teacher` section: model, endpoint, sampling, cache and prices (USD per 1M tokens)."""

    model: str = "deepseek-reasoner"
    endpoint: str = "deepseek"  # deepseek | vllm | sglang | openai | recorded
    base_url: str | None = None
    api_key_env: str | None = "DEEPSEEK_API_KEY"
    template: str = "medr1-mcq-v1"
    samples: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 32768
    cache: str = "cache/teacher"
    offline: bool = False
    price_input_per_m: float = 0.0
    price_output_per_m: float = 0.0
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters that enter the request key."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}

    def public(self) -> dict[str, Any]:
        """Settings safe to print in cards and reports (names of environment variables, never their values)."""
        return asdict(self)


def request_key(model: str, template: str, messages: list[dict], sampling: dict[str, Any], sample_idx: int) -> str:
    """SHA-256 over everything that determines a teacher response; equal keys are never paid for twice."""
    payload = {
        "model": model,
        "template": template,
        "messages": messages,
        "sampling": sampling,
        "sample_idx": sample_idx,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def split_reasoning(message: dict[str, Any]) -> tuple[str | None, str]:
    """(reasoning, response) from a chat message: `reasoning_content`, `reasoning`, or inline `<think>` in content."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        return reasoning.strip(), content.strip()
    m = THINK_RE.search(content)
    if m:
        return m.group(1).strip(), (content[: m.start()] + content[m.end() :]).strip()
    if "</think>" in content:  # R1 chat templates pre-fill the opening <think>; only the close comes back
        head, _, tail = content.partition("</think>")
        return head.replace("<think>", "", 1).strip(), tail.strip()
    if content.lstrip().startswith("<think>"):  # cut off while thinking: all reasoning, no response
        return content.lstrip()[len("<think>") :].strip(), ""
    return None, content.strip()


class ResponseCache:
    """Append-only JSON-lines cache of successful teacher responses, keyed by `request_key`."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / CACHE_FILE

    def load(self) -> dict[str, dict[str, Any]]:
        """Every complete record by key; a half-written last line (a killed writer) is skipped."""
        if not self.path.exists():
            return {}
        records: dict[str, dict[str, Any]] = {}
        with self.path.open("rb") as f:
            for n, line in enumerate(f, start=1):
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    if line.endswith(b"\n"):
                        raise Medr1Error(f"{self.path}: line {n} is not a cache record") from None
                    continue
                records[rec["key"]] = rec
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records durably (flush and fsync) so that a paid response survives a crash."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _drop_partial_tail(self.path)
        with self.path.open("ab") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())


def _drop_partial_tail(path: Path) -> None:
    """Cut a half-written last line (a writer killed mid-record) so that appended records start on a fresh line."""
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        while True:
            f.seek(size - block)
            cut = f.read(block).rfind(b"\n")
            if cut >= 0:
                f.truncate(size - block + cut + 1)
                return
            if block == size:
                f.truncate(0)
                return
            block = min(size, block * 2)


def cache_record(
    key: str,
    teacher: TeacherSettings,
    sample_idx: int,
    message: dict[str, Any],
    finish_reason: str,
    usage: dict[str, int],
    latency_s: float | None,
) -> dict[str, Any]:
    """The cache line for one successful response."""
    return {
        "key": key,
        "model": teacher.model,
        "template": teacher.template,
        "sample_idx": sample_idx,
        "message": message,
        "finish_reason": finish_reason,
        "usage": usage,
        "latency_s": latency_s,
    }


def requests_for(table: pa.Table, teacher: TeacherSettings) -> list[tuple[int, int, str]]:
    """(row index, sample index, request key) for every request the table needs."""
    template = get_template(teacher.template)
    out = []
    cols = table.select(["question", "options", "context"]).to_pydict()
    for i, (q, opts, ctx) in enumerate(zip(cols["question"], cols["options"], cols["context"], strict=True)):
        messages = template.messages(q, opts, ctx)
        for s in range(teacher.samples):
            out.append((i, s, request_key(teacher.model, template.name, messages, teacher.sampling(), s)))
    return out


def distill(table: pa.Table, teacher: TeacherSettings) -> pa.Table:
    """One row per (question, sample): the question's columns plus the teacher's trace, served from the cache.

    Online requests (the async client) belong to the distillation issue; with `offline: true`, or before that
    client exists, a request missing from the cache is an error that names how many are missing.
    """
    needed = requests_for(table, teacher)
    cached = ResponseCache(teacher.cache).load()
    missing = [(i, s) for i, s, k in needed if k not in cached]
    if missing:
        first = table.column("id")[missing[0][0]].as_py()
        raise Medr1Error(
            f"{teacher.cache}: {len(missing)} of {len(needed)} teacher responses are not in the cache "
            f"(first: {first} sample {missing[0][1]}); this build runs offline from recorded responses"
        )
    cols: dict[str, list[Any]] = {f.name: [] for f in TRACE_FIELDS}
    take = []
    for i, s, k in needed:
        rec = cached[k]
        reasoning, response = split_reasoning(rec["message"])
        usage = rec.get("usage") or {}
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        cost = ((pt or 0) * teacher.price_input_per_m + (ct or 0) * teacher.price_output_per_m) / 1e6
        for name, value in (
            ("sample_idx", s),
            ("teacher_model", rec["model"]),
            ("prompt_template", rec["template"]),
            ("reasoning", reasoning),
            ("response", response),
            ("finish_reason", rec.get("finish_reason")),
            ("prompt_tokens", pt),
            ("completion_tokens", ct),
            ("cost_usd", cost),
            ("latency_s", rec.get("latency_s")),
            ("error", None),
        ):
            cols[name].append(value)
        take.append(i)
    out = table.take(pa.array(take, pa.int64()))
    for f in TRACE_FIELDS:
        out = out.append_column(f, pa.array(cols[f.name], f.type))
    return conform(out, TRACE_SCHEMA)
