"""Regenerate the demo's response cache from `traces.jsonl` (run after editing the traces or the template)."""

from __future__ import annotations

import json
from pathlib import Path

from medr1_data import Medr1Error
from medr1_data.recipe import load_recipe
from medr1_data.stages import recipe_questions
from medr1_data.teacher import ResponseCache, cache_record, plan_requests

DEMO = Path(__file__).parent


def demo_records() -> list[dict]:
    """Cache records for every (demo question, sample), keyed exactly as the distill stage will look them up."""
    recipe = load_recipe("demo")
    questions = recipe_questions(recipe)
    traces = {}
    for line in (DEMO / "traces.jsonl").read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        traces[(t["source"], t["question"], t["sample_idx"])] = t
    keys = plan_requests(questions, recipe.teacher).requests
    sources, stems = questions.column("source").to_pylist(), questions.column("question").to_pylist()
    records = []
    for i, s, key in keys:
        t = traces.get((sources[i], stems[i], s))
        if t is None:
            raise Medr1Error(f"traces.jsonl: no sample {s} for {sources[i]} question '{stems[i][:50]}…'")
        message = {"role": "assistant", "content": t["content"], "reasoning_content": t["reasoning"]}
        records.append(cache_record(key, recipe.teacher, s, message, t["finish_reason"], {}, None))
    return sorted(records, key=lambda r: r["key"])


def main() -> None:
    """Rewrite `demo/cache/responses.jsonl`."""
    cache = ResponseCache(DEMO / "cache")
    cache.path.unlink(missing_ok=True)
    records = demo_records()
    cache.append(records)
    print(f"wrote {len(records)} records to {cache.path}")


if __name__ == "__main__":
    main()
