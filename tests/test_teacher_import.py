"""`teacher.endpoint: dataset`: a build whose teacher is an existing open dataset, in each peer layout."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from medr1_data.build import run, summary_rows
from medr1_data.recipe import load_recipe
from medr1_data.shards import read_release
from medr1_data.stages import recipe_questions
from medr1_data.teacher import ResponseCache
from medr1_data.teacher.importer import question_key

DEMO = Path(__file__).resolve().parents[1] / "medr1_data" / "demo"


LAYOUTS = ("m23k", "ii_medical", "openmed", "huatuo_o1", "messages")


def _row(layout: str, prompt: str, reasoning: str, content: str) -> dict[str, Any]:
    """One question and its trace in `layout`'s columns (as the peers' cards describe them)."""
    if layout == "m23k":
        return {"prompt": prompt, "answer_letter": None, "reasoning": reasoning, "distilled_answer_string": content}
    if layout == "huatuo_o1":
        return {"Question": prompt, "Complex_CoT": reasoning, "Response": content}
    if layout == "openmed":  # the thinking in its own field of the assistant turn
        assistant = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    else:  # II-Medical and plain chats: the thinking inline
        assistant = {"role": "assistant", "content": f"<think>{reasoning}</think>{content}"}
    extra = {"model": "R1", "problem": prompt, "question": prompt} if layout == "ii_medical" else {}
    return {"messages": [{"role": "user", "content": prompt}, assistant], **extra}


def _dataset(path: Path, leave_out: int, layout: str) -> tuple[int, set[str]]:
    """The demo's questions and hand-written traces as a dataset in `layout` (options shuffled and re-cased in the
    prompt); the first `leave_out` questions are not in it. Returns (rows written, match keys left out)."""
    recipe = load_recipe("demo")
    questions = recipe_questions(recipe).to_pylist()
    traces = [json.loads(line) for line in (DEMO / "traces.jsonl").read_text(encoding="utf-8").splitlines()]
    by_q = {(t["source"], t["question"], t["sample_idx"]): t for t in traces}
    rows, left_out = [], set()
    for n, q in enumerate(questions):
        if n < leave_out:
            left_out.add(question_key(q["question"], q["options"]))
            continue
        opts = list(reversed(q["options"]))  # another order: the match reads the option set, not the letters
        prompt = q["question"].upper() + "\n" + "\n".join(f"{'ABCDEFG'[i]}. {o['text']}" for i, o in enumerate(opts))
        for s in (0, 1):
            t = by_q.get((q["source"], q["question"], s))
            if t:
                rows.append(_row(layout, prompt, t["reasoning"], t["content"]))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows), left_out


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_dataset_teacher_fills_the_cache_and_requests_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    data = tmp_path / "peer.jsonl"
    written, left_out = _dataset(data, 4, layout)
    overrides = ["teacher.endpoint=dataset", f"teacher.spec={layout}={data}", f"teacher.cache={tmp_path / 'cache'}",
                 "teacher.offline=false", "teacher.model=peer-dataset"]  # fmt: skip
    real_connect = socket.socket.connect

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"the dataset teacher tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    b = run(load_recipe("demo", overrides), tmp_path / "release", quiet=True)
    monkeypatch.setattr(socket.socket, "connect", real_connect)
    rows = dict(summary_rows(b))
    assert rows["  not sent to the teacher: not_in_dataset"] == 2 * len(left_out)  # two samples per question
    cached = ResponseCache(tmp_path / "cache").load()
    contaminated = rows["  not sent to the teacher: contaminated"]  # never asked for: its rows stay unused
    assert len(cached) == rows["teacher traces"] == written - 2 * contaminated
    assert all(r["imported_from"].startswith(f"{data}#row=") for r in cached.values())
    assert rows["traces kept"] > 0 and rows["teacher traces"] == 2 * (rows["questions"] - contaminated - len(left_out))
    release = read_release(b.out)
    assert not {question_key(q, o) for q, o in zip(release["question"].to_pylist(), release["options"].to_pylist(),
                                                    strict=True)} & left_out  # fmt: skip
    served = "R1" if layout == "ii_medical" else str(data)  # II-Medical names each row's model in `model`
    assert b.stats["teacher_reported"] == {served: rows["teacher traces"]}
    card = (b.out / "README.md").read_text()
    n = rows["teacher traces"]
    imported = f"| imported from (an existing dataset; nothing requested) | `{data}` ({n} traces) |"
    assert imported in card
    again = run(load_recipe("demo", overrides), tmp_path / "again", quiet=True)  # served from the cache now
    assert dict(summary_rows(again)) == rows
