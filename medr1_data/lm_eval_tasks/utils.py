"""Data, prompt, answer filter and scoring for the MedR1 lm-evaluation-harness tasks (referenced from the YAMLs)."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import datasets
from lm_eval.api.filter import Filter
from lm_eval.api.task import ConfigurableTask

from medr1_data.answers import extract
from medr1_data.benchmarks import load_benchmark
from medr1_data.prompts import get_template

log = logging.getLogger("medr1.lm_eval")

TEMPLATE = "medr1-mcq-v1"  # the training rows' template: same system prompt, same user turn
INVALID = "[invalid]"
METADATA_DIR = "benchmark_dir"  # --metadata '{"benchmark_dir": "/path/to/benchmarks"}'
# A generation within 1% of max_gen_toks counts as having hit it: decoding and re-encoding may merge a few tokens.
LIMIT_SLACK = 0.01
# Model args (merged into task metadata) that name a tokenizer. An API model's `model=` alias is not one: guessing
# a Hub repository from it would be a network lookup and, offline or wrong, a made-up token count.
TOKENIZER_KEYS = ("tokenizer", "pretrained")


# --------------------------------------------------------------------------------------------------- data


def load(benchmark: str, **metadata: Any) -> datasets.DatasetDict:
    """The benchmark's canonical items as a `test` split, through the registry (Hub, or local native files).

    `--metadata '{"benchmark_dir": DIR}'` (or `MEDR1_BENCHMARK_DIR`) reads a folder laid out like
    `../shared/data/benchmarks/`; `--metadata '{"<benchmark>": PATH}'` reads one native file or folder.
    """
    path = metadata.get(benchmark)
    spec = f"{benchmark}={path}" if path else benchmark
    _, loaded = load_benchmark(spec, metadata.get(METADATA_DIR) or None)
    if loaded.rejects.num_rows:
        log.warning(
            "%s: %d rows rejected by the source adapter: %s", benchmark, loaded.rejects.num_rows, loaded.reject_counts()
        )
    table = loaded.table.select(["id", "source_id", "question", "options", "answer_label", "context", "meta"])
    return datasets.DatasetDict({"test": datasets.Dataset(table)})


def medqa(**metadata: Any) -> datasets.DatasetDict:
    """MedQA-USMLE US 4-option test (1273)."""
    return load("medqa_us_test", **metadata)


def medmcqa(**metadata: Any) -> datasets.DatasetDict:
    """MedMCQA validation (4183)."""
    return load("medmcqa_val", **metadata)


def pubmedqa(**metadata: Any) -> datasets.DatasetDict:
    """PubMedQA official test split (500), with the abstract as context."""
    return load("pubmedqa_test", **metadata)


def mmlu_medical(**metadata: Any) -> datasets.DatasetDict:
    """MMLU test, the six medical subjects (1089)."""
    return load("mmlu_medical_test", **metadata)


def headqa(**metadata: Any) -> datasets.DatasetDict:
    """HEAD-QA English test."""
    return load("headqa_en_test", **metadata)


# --------------------------------------------------------------------------------------------------- prompts


def doc_to_text(doc: dict) -> str:
    """The user turn the training rows use (context, question, `X. text` options)."""
    return get_template(TEMPLATE).user_turn(doc["question"], doc["options"], doc.get("context"))


def system_prompt() -> str:
    """The system prompt the training rows use."""
    return get_template(TEMPLATE).system


def doc_to_text_mc(doc: dict) -> str:
    """The same user turn followed by `Answer:`, for log-likelihood scoring of the option letters."""
    return doc_to_text(doc) + "\nAnswer:"


def doc_to_choice(doc: dict) -> list[str]:
    """The option labels (A, B, ...)."""
    return [o["label"] for o in doc["options"]]


def doc_to_target_mc(doc: dict) -> int:
    """Index of the gold label among the options."""
    return doc_to_choice(doc).index(doc["answer_label"])


# --------------------------------------------------------------------------------------------------- answers


class Reading(str):
    """The label a generation committed to (or `[invalid]`), carrying the generation and the extractor's rule."""

    response: str
    rule: str

    def __new__(cls, label: str | None, response: str, rule: str) -> Reading:
        obj = super().__new__(cls, label or INVALID)
        obj.response, obj.rule = response, rule
        return obj

    def __getnewargs__(self) -> tuple[str, str, str]:  # copy/pickle (lm-eval deep-copies task state)
        return str(self), self.response, self.rule


class Vote(Reading):
    """The majority answer of k sampled generations, carrying every sample's Reading (for avg@k and the rates)."""

    samples: tuple[Reading, ...]

    def __new__(cls, samples: Sequence[Reading]) -> Vote:
        counts = Counter(str(r) for r in samples if str(r) != INVALID)
        # The most frequent committed answer; a tie goes to the answer reached first. No answer does not vote.
        label = max(counts, key=counts.__getitem__, default=None)  # Counter keeps first-seen order; max the first
        obj = super().__new__(cls, label, samples[0].response if samples else "", "majority_vote")
        obj.samples = tuple(samples)
        return obj

    def __getnewargs__(self) -> tuple[tuple[Reading, ...]]:  # type: ignore[override]
        return (self.samples,)


def read(response: str | None, options: Iterable[Any]) -> Reading:
    """Read the committed answer after the thinking with the shared extractor (`medr1_data.answers`)."""
    response = response or ""
    found = extract(response, list(options))
    return Reading(found.label, response, found.rule)


class CommittedAnswer(Filter):
    """lm-eval filter: every generation of a document (all `repeats`) becomes the label it committed to.

    Compose it with lm-eval's `take_first` (one generation per question) or with `MajorityAnswer` (maj@k).
    """

    def apply(self, resps: Iterable[list[str]], docs: list[dict]) -> list[list[Reading]]:
        return [[read(g, doc["options"]) for g in (r or [""])] for r, doc in zip(resps, docs, strict=True)]


class MajorityAnswer(Filter):
    """lm-eval filter after `CommittedAnswer`: the k readings of a document become one `Vote` (then `take_first`)."""

    def apply(self, resps: Iterable[list[Reading]], docs: list[dict]) -> list[list[Vote]]:
        return [[Vote(list(r))] for r in resps]


# --------------------------------------------------------------------------------------------------- scoring


@functools.lru_cache(maxsize=8)
def _tokenizer(name: str) -> Any:
    offline = any(os.environ.get(v, "").lower() in ("1", "true") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=offline)  # offline: no Hub lookup at all
    except Exception as e:  # no tokenizer under that name (an API model's alias, offline, ...)
        log.warning(
            "medr1: no tokenizer for '%s' (%s); `truncated` is unknown (NaN) for this run",
            name,
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        return None


_warned_unknown = False


def hit_limit(response: str, max_gen_toks: int | None, tokenizer: Any | None) -> float:
    """1.0 when a generation used its whole token budget, 0.0 when not, NaN when unknown (no tokenizer)."""
    global _warned_unknown
    if tokenizer is None or not max_gen_toks:
        if not _warned_unknown:
            _warned_unknown = True
            log.warning(
                "medr1: no tokenizer given (model args `tokenizer=` or `pretrained=`, or metadata "
                "{'tokenizer': NAME}): `truncated` is reported as NaN, unknown rather than guessed"
            )
        return math.nan
    n = len(tokenizer(response, add_special_tokens=False)["input_ids"])
    return float(n >= max_gen_toks - max(1, int(max_gen_toks * LIMIT_SLACK)))


def _score(doc: dict, reading: Reading, max_gen_toks: int | None, tokenizer: Any | None) -> tuple[float, float, float]:
    """(correct, truncated, no_answer) of one generation; a generation cut off before any `</think>` gets no credit."""
    cut = hit_limit(reading.response, max_gen_toks, tokenizer)
    committed = str(reading) != INVALID and not (cut == 1.0 and "</think>" not in reading.response)
    return float(committed and str(reading) == doc["answer_label"]), cut, float(str(reading) == INVALID)


def process_results(
    doc: dict, results: list[Any], max_gen_toks: int | None = None, tokenizer: Any | None = None
) -> dict[str, float]:
    """`acc`: the committed label is the gold one; `truncated`: the generation hit `max_gen_toks` (NaN: unknown);
    `no_answer`: it committed to nothing. For a `Vote` (maj@k tasks): `maj_acc` is the majority answer's accuracy,
    `avg_acc` the mean accuracy of the k samples, `truncated` and `no_answer` their shares of the k samples.

    A generation cut off before any `</think>` gets no credit: under a template that pre-fills `<think>` its text
    is unfinished thinking, and a letter read from it is not a committed answer.
    """
    reading = results[0] if isinstance(results[0], Reading) else read(results[0], doc["options"])
    if not isinstance(reading, Vote):
        acc, cut, none = _score(doc, reading, max_gen_toks, tokenizer)
        return {"acc": acc, "truncated": cut, "no_answer": none}
    scores = [_score(doc, r, max_gen_toks, tokenizer) for r in reading.samples]
    k = len(scores)
    # The majority is right when it is the gold label and a sample voting for it got credit (not cut off unfinished).
    credited = any(str(r) == str(reading) and sc[0] == 1.0 for r, sc in zip(reading.samples, scores, strict=True))
    return {
        "maj_acc": float(str(reading) == doc["answer_label"] and credited),
        "avg_acc": sum(sc[0] for sc in scores) / k,
        "truncated": sum(sc[1] for sc in scores) / k,
        "no_answer": sum(sc[2] for sc in scores) / k,
    }


class MedR1Task(ConfigurableTask):
    """A generative MedR1 task: `acc` (or maj@k/avg@k), `truncated` and `no_answer`; see `process_results`."""

    _warned_template = False

    def __init__(self, config: dict | None = None, **kwargs: Any) -> None:
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        config["process_results"] = process_results  # marks the metrics as computed here; see `process_results` below
        config.setdefault("description", system_prompt())  # the system turn under --apply_chat_template
        super().__init__(config=config, **kwargs)

    def tokenizer(self) -> Any | None:
        """The model's tokenizer, from the model args lm-eval merges into the task metadata."""
        meta = self.config.metadata or {}
        for key in TOKENIZER_KEYS:
            if isinstance(meta.get(key), str) and meta[key]:
                return _tokenizer(meta[key])
        return None

    def process_results(self, doc: dict, results: list[Any]) -> dict[str, float]:
        """The metrics against this task's (possibly overridden) `max_gen_toks` and the model's tokenizer."""
        limit = int((self.config.generation_kwargs or {}).get("max_gen_toks", 256))
        return process_results(doc, results, limit, self.tokenizer())

    def fewshot_context(self, doc: dict, num_fewshot: int, *args: Any, **kwargs: Any) -> str | list[str]:
        """lm-eval's prompt; warns once when the chat template is off (the tasks are meant for chat models)."""
        if not kwargs.get("apply_chat_template") and not MedR1Task._warned_template:
            MedR1Task._warned_template = True
            log.warning("medr1 tasks expect --apply_chat_template (system prompt + user turn as chat messages)")
        return super().fewshot_context(doc, num_fewshot, *args, **kwargs)
