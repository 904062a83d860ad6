"""The real DeepSeek-R1 completions in ../shared/data/traces as a MedR1 trace table (for tests and benchmarks)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow as pa

from medr1_data.schema import TRACE_SCHEMA
from medr1_data.teacher import split_reasoning


def load_real_traces(folder: Path, pattern: str = "deepseek_r1_*.json") -> pa.Table:
    """One row per completion: canonical question columns plus reasoning/response split as the distiller does."""
    rows = []
    for file in sorted(folder.glob(pattern)):
        for i, r in enumerate(json.loads(file.read_text(encoding="utf-8"))):
            options = r["options"] if isinstance(r["options"], dict) else ast.literal_eval(r["options"])
            completion = r["completion"]
            reasoning, response = split_reasoning({"content": completion})
            usage = r.get("token_usage") or {}
            usage = ast.literal_eval(usage) if isinstance(usage, str) else usage
            rows.append(
                {
                    "id": f"{file.stem}/{i}",
                    "source": file.stem,
                    "source_split": "test",
                    "source_id": str(i),
                    "question": r["question"],
                    "options": [{"label": k, "text": str(v)} for k, v in options.items()],
                    "answer_label": r["answer_idx"],
                    "context": None,
                    "meta": json.dumps({"file": file.name}),
                    "license": "MIT",
                    "sample_idx": 0,
                    "teacher_model": "deepseek-r1",
                    "prompt_template": "medagents",
                    "reasoning": reasoning,
                    "response": response,
                    "finish_reason": "stop" if "</think>" in completion else None,
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "completion_tokens": usage.get("completion_tokens"),
                    "cost_usd": None,
                    "latency_s": float(r["time_elapsed"]) if r.get("time_elapsed") else None,
                    "error": None,
                    "predicted_answer": r.get("predicted_answer"),
                    "has_think_end": "</think>" in completion,
                }
            )
    extra = [pa.field("predicted_answer", pa.string()), pa.field("has_think_end", pa.bool_())]
    return pa.Table.from_pylist(rows, schema=pa.schema(list(TRACE_SCHEMA) + extra))
