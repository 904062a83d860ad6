"""Request keys and the request plan: one request per (question, sample), and the jobs the cache lacks.

A request's key is a SHA-256 over the model, the prompt template, the messages, the sampling parameters and the
sample index (`request_key`): equal keys are the same request, and a key the cache holds is never requested again.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from medr1_data import Medr1Error, canonical_sha256
from medr1_data.prompts import get_template
from medr1_data.teacher.settings import TeacherSettings


def request_key(model: str, template: str, messages: list[dict], sampling: dict[str, Any], sample_idx: int) -> str:
    """SHA-256 over everything that determines a teacher response; equal keys are never paid for twice."""
    payload = {
        "model": model,
        "template": template,
        "messages": messages,
        "sampling": sampling,
        "sample_idx": sample_idx,
    }
    return canonical_sha256(payload)


@dataclass
class Plan:
    """Every request a table needs: (row, sample index, key) in row order, and each row's chat messages."""

    requests: list[tuple[int, int, str]]
    messages: list[list[dict[str, str]]]


def plan_requests(table: pa.Table, teacher: TeacherSettings) -> Plan:
    """The requests of every (question, sample); the keys hash the template's messages and the sampling."""
    missing = [c for c in ("id", "question", "options", "context") if c not in table.column_names]
    if missing:
        raise Medr1Error(f"questions table: missing column '{missing[0]}'")
    template = get_template(teacher.template)
    cols = table.select(["question", "options", "context"]).to_pydict()
    # `request_key`'s JSON is the same for every sample of a question up to the sample index: hash that prefix
    # once per question and finish one copy per sample (tests check the keys equal `request_key`'s).
    head = '{"messages":'
    mid = ',"model":' + _json(teacher.model) + ',"sample_idx":'
    tail = (',"sampling":' + _json(teacher.sampling()) + ',"template":' + _json(template.name) + "}").encode()
    memo: dict[str, str] = {}
    requests: list[tuple[int, int, str]] = []
    messages: list[list[dict[str, str]]] = []
    sha256 = hashlib.sha256
    for i, (q, opts, ctx) in enumerate(zip(cols["question"], cols["options"], cols["context"], strict=True)):
        msgs = template.messages(q, opts, ctx)
        messages.append(msgs)
        h = sha256((head + _messages_json(msgs, memo) + mid).encode())
        for s in range(teacher.samples):
            hs = h.copy()
            hs.update(b"%d%s" % (s, tail))
            requests.append((i, s, hs.hexdigest()))
    return Plan(requests, messages)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


_encode_str = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for strings


def _messages_json(msgs: list[dict[str, Any]], memo: dict[str, str]) -> str:
    """`_json(msgs)` for chat messages, fast: plain {role, content} messages are encoded directly and the
    system message (the same for every question) once."""
    parts = []
    for m in msgs:
        role, content = m.get("role"), m.get("content")
        if len(m) != 2 or type(role) is not str or type(content) is not str:
            parts.append(_json(m))
        elif role == "system":
            j = memo.get(content)
            if j is None:
                j = memo[content] = _json(m)
            parts.append(j)
        else:
            parts.append('{"content":' + _encode_str(content) + ',"role":' + _encode_str(role) + "}")
    return "[" + ",".join(parts) + "]"


@dataclass
class Job:
    """One request to make: its key, messages, sample index and the first question id that needs it."""

    key: str
    messages: list[dict[str, str]]
    sample_idx: int
    qid: str


def missing_jobs(table: pa.Table, plan: Plan, have: dict[str, Any] | set[str]) -> list[Job]:
    """One job per distinct missing key, in table order."""
    ids = table.column("id").to_pylist()
    seen: set[str] = set()
    jobs = []
    for i, s, key in plan.requests:
        if key in have or key in seen:
            continue
        seen.add(key)
        jobs.append(Job(key, plan.messages[i], s, ids[i]))
    return jobs
