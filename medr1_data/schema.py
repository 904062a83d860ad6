"""Canonical columns of MedR1 tables as pyarrow schemas, and their validator."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from medr1_data import Medr1Error

OPTION = pa.struct([("label", pa.string()), ("text", pa.string())])

QUESTION_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_split", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("question", pa.string(), nullable=False),
    pa.field("options", pa.list_(OPTION), nullable=False),
    pa.field("answer_label", pa.string(), nullable=False),
    pa.field("context", pa.string(), nullable=True),
    pa.field("meta", pa.string(), nullable=False),
    pa.field("license", pa.string(), nullable=False),
]
QUESTION_SCHEMA = pa.schema(QUESTION_FIELDS)

TRACE_FIELDS: list[pa.Field] = [
    pa.field("sample_idx", pa.int32(), nullable=False),
    pa.field("teacher_model", pa.string()),
    pa.field("prompt_template", pa.string()),
    pa.field("reasoning", pa.string()),
    pa.field("response", pa.string()),
    pa.field("finish_reason", pa.string()),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("cost_usd", pa.float64()),
    pa.field("latency_s", pa.float64()),
    pa.field("error", pa.string()),
]
TRACE_SCHEMA = pa.schema(QUESTION_FIELDS + TRACE_FIELDS)

VERIFY_FIELDS: list[pa.Field] = [
    pa.field("pred_label", pa.string()),
    pa.field("is_correct", pa.bool_(), nullable=False),
    pa.field("verify_reason", pa.string(), nullable=False),
    pa.field("answer_source", pa.string()),
]

# The release's chat columns: one conversation per row (system, user, assistant), read by any SFT trainer as is.
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning_content", pa.string())])
MESSAGE_INLINE = pa.struct([("role", pa.string()), ("content", pa.string())])
CHAT_FIELDS: list[pa.Field] = [
    pa.field("messages", pa.list_(MESSAGE)),
    pa.field("messages_think_inline", pa.list_(MESSAGE_INLINE)),
]

REJECT_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_split", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

COLUMN_DOCS: dict[str, str] = {
    "id": "Stable unique id: `<source>/<split>/<source_id>`.",
    "source": "Registered source name (medqa, medmcqa, pubmedqa, ...).",
    "source_split": "Split of the source the question comes from.",
    "source_id": "The source's own id, or `h<sha1>` of the stem and options where it has none.",
    "question": "The question stem only, without the options.",
    "options": "Answer options as a list of {label, text}, labels A, B, ... in the source's order.",
    "answer_label": "Label of the gold option.",
    "context": "Supporting passage (the PubMedQA abstract); null for plain MCQs.",
    "meta": "JSON object with the source's extra fields (subject, topic, explanation, exam, ...).",
    "license": "Licence of the source the question comes from.",
    "sample_idx": "Index of the teacher sample for this question (0-based).",
    "teacher_model": "Teacher model that wrote the trace.",
    "prompt_template": "Name and version of the prompt template sent to the teacher.",
    "reasoning": "The teacher's thinking text (inside <think>...</think>).",
    "response": "The teacher's answer text after the thinking.",
    "finish_reason": "Why generation stopped (`stop`, or `length` when cut off).",
    "prompt_tokens": "Prompt tokens billed for the request.",
    "completion_tokens": "Completion tokens billed for the request (thinking included).",
    "cost_usd": "Cost of the request in US dollars at the recipe's price table.",
    "latency_s": "Seconds the request took (null for responses served from a recording).",
    "error": "Why the request failed; null on success.",
    "pred_label": "Option label extracted from the response (null when none was committed).",
    "is_correct": "Whether `pred_label` equals `answer_label`.",
    "verify_reason": "How the verdict was reached (`correct`, `wrong_answer`, `no_answer`, ...).",
    "answer_source": "Where the committed answer was read: `response`, or `reasoning` when the response had none.",
    "quality": "Trace-quality signals (lengths, truncation, structure, repetition, script mixing, flip-flops, "
    "conclusion agreement, hedging) and the list of quality flags raised.",
    "quality_score": "Trace quality in 0-1: 1 minus the weights of the flags raised (see medr1_data/score.py).",
    "drop_reason": "Why a trace was not kept (null for kept rows).",
    "contaminated": "Whether the question matched a benchmark test item (always false in a release).",
    "contam_benchmark": "The benchmark whose item the question matched (null when clean).",
    "contam_item_id": "The matched benchmark item's own id.",
    "contam_score": "Strength of the match in 0-1.",
    "contam_rule": "Which decontamination check fired.",
    "dup_cluster": "Id of the kept question of this question's near-duplicate cluster (its own id when unique).",
    "dup_keep": "Whether this question is the one kept from its near-duplicate cluster.",
    "messages": "The row as a chat: system (the training system prompt), user (the question as the prompt template "
    "renders it), assistant with `<answer>X</answer>` as `content` and the thinking as `reasoning_content`.",
    "messages_think_inline": "The same chat with the thinking inline: the assistant's `content` is "
    "`<think>reasoning</think>` then `<answer>X</answer>` (for chat templates that ignore `reasoning_content`).",
}


def validate(table: pa.Table, schema: pa.Schema = QUESTION_SCHEMA, *, what: str = "table") -> None:
    """Raise Medr1Error unless `table` has the schema's columns and types, non-null required fields and unique ids."""
    for field in schema:
        if field.name not in table.column_names:
            raise Medr1Error(f"{what}: missing column '{field.name}'")
        col = table.column(field.name)
        if not col.type.equals(field.type):
            raise Medr1Error(f"{what}: column '{field.name}' has type {col.type}, expected {field.type}")
        if not field.nullable and col.null_count:
            row = pc.index(pc.is_null(col), True).as_py()
            raise Medr1Error(f"{what}: row {row}: column '{field.name}' is null")
    key = ["id", "sample_idx"] if "sample_idx" in schema.names else ["id"]
    if "id" in schema.names and table.num_rows:
        n_unique = table.group_by(key).aggregate([]).num_rows
        if n_unique != table.num_rows:
            raise Medr1Error(f"{what}: {table.num_rows - n_unique} duplicate {'/'.join(key)} values")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Put the schema's columns first, in its order and types; other columns follow unchanged."""
    rest = [n for n in table.column_names if n not in schema.names]
    cols = [table.column(f.name).cast(f.type) for f in schema] + [table.column(n) for n in rest]
    fields = list(schema) + [table.schema.field(n) for n in rest]
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


DROP_FIELD = pa.field("drop_reason", pa.string())
KNOWN_FIELDS: dict[str, pa.Field] = {
    f.name: f for f in [*QUESTION_FIELDS, *TRACE_FIELDS, *VERIFY_FIELDS, DROP_FIELD, *CHAT_FIELDS]
}


def plain_type(t: pa.DataType) -> pa.DataType:
    """The type with large and view strings and lists replaced by plain ones, recursively."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_list(t):
        return pa.list_(plain_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, plain_type(f.type), f.nullable) for f in t])
    return t


def normalize(table: pa.Table) -> pa.Table:
    """Cast known columns to their canonical types and others to plain (non-large, non-view) Arrow types."""
    fields = []
    for f in table.schema:
        known = KNOWN_FIELDS.get(f.name)
        fields.append(pa.field(f.name, known.type if known else plain_type(f.type), True))
    return table.cast(pa.schema(fields))
