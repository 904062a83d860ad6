"""Disguised copies of real benchmark items, for decontamination tests and benchmarks/decontam.py (one copy, here).

Each kind is one way a test item leaks into training data. `disguise(item, kind, rng, ...)` returns a new canonical
question row (dict with the QUESTION_SCHEMA columns) made from `item` (a canonical row dict); the detector under
test must flag it:

- verbatim: the item as it is (new id).
- recase: every word randomly re-cased, spaces doubled or turned into newlines/tabs, trailing punctuation changed,
  brackets and hyphens spaced out; stem and options.
- shuffle: options in another order, relabelled A, B, ...; the answer label follows its text.
- stem_only: the stem alone: no options, no answer, no context.
- options_only: the options (shuffled) and answer with a reworded stem: a template around about 60% of the stem's
  topic words (words outside the corpus's 400 most common ones), nothing else kept. PubMedQA keeps its abstract (its
  options are yes/no/maybe for all 500 items). `unrelated_stem` gives the harsher `options_unrelated` variant that
  benchmarks/decontam.py also reports: the options under an unrelated stem (not identifiable for generic option
  sets, so no target is set for it).
- wrapped: inside one of ten instruction prompts, of which only some match `normalize`'s wrapper patterns (the rest
  must be caught by containment); half also list the options inline.
- truncated: the first ceil(70%) of the stem's words; options kept.
- reordered: the stem's sentences shuffled; one-sentence stems rotate their comma clauses (else stay as they are).
- synonyms: round(15%) of all the words of stem and options replaced: words of the hand-written SYNONYMS table
  first, the rest by filler words. Neither table is known to the detector.
- new_options: the stem (and context) verbatim under the options of a clean question (as many as the item has, one
  of them the answer); short or boilerplate stems do not identify an item this way, so its recall is bounded by the
  share of distinctive stems.

Kinds and real hard negatives are split into a tuning part (the thresholds of `DecontamSettings` were set on it) and
a held-out part, only reported (`TUNING_*`, `HELDOUT_*`; tests/test_decontam.py says why this split).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# MedXpertQA rows (`realidx`) that really overlap a MedQA-USMLE test item (its 0-based line in
# medqa_us_4options_test.jsonl), set aside before MedXpertQA serves as clean hard negatives. Found without the detector:
# rapidfuzz ratio of every (hard negative, test item) canonical-stem pair (process.cdist) plus exact shared option
# texts; the 140 pairs with token_set_ratio >= 70 and the same patient age, >= 3 shared numbers or >= 2 shared options
# (or >= 2 shared options, the same answer text and token_set_ratio >= 55) were read by hand. These 77 describe the
# same case: a few verbatim stems with 10 options instead of 4, the rest rewrites (same patient, history and findings;
# some with the age, sex or the question changed). No MedExpQA row, and no overlap with MedMCQA, PubMedQA or MMLU, was
# found.
_OVERLAPS = """
    Text-8=246 Text-39=1247 Text-42=198 Text-73=1170 Text-92=887 Text-93=1142 Text-98=1093 Text-133=963 Text-160=921
    Text-196=480 Text-342=714 Text-358=583 Text-361=265 Text-366=247 Text-375=241 Text-403=128 Text-445=307
    Text-458=759 Text-591=862 Text-669=531 Text-722=34 Text-820=592 Text-823=807 Text-896=378 Text-908=965
    Text-919=337 Text-937=948 Text-941=856 Text-942=145 Text-954=688 Text-1017=1172 Text-1040=1257 Text-1044=381
    Text-1057=756 Text-1089=358 Text-1189=0 Text-1194=52 Text-1228=706 Text-1230=1198 Text-1263=519 Text-1320=215
    Text-1383=1076 Text-1461=483 Text-1551=822 Text-1570=332 Text-1588=429 Text-1786=944 Text-1804=549 Text-1834=237
    Text-1859=878 Text-1864=415 Text-1868=493 Text-1893=1135 Text-1905=587 Text-1909=1007 Text-1912=869
    Text-1976=664 Text-1980=778 Text-1988=747 Text-2005=953 Text-2042=1245 Text-2082=303 Text-2093=1153
    Text-2105=423 Text-2143=687 Text-2202=130 Text-2209=928 Text-2251=413 Text-2253=755 Text-2298=621 Text-2339=989
    Text-2353=531 Text-2355=231 Text-2391=117 Text-2395=73 Text-2445=594 Text-2446=212
"""
MEDXPERTQA_OVERLAPS: dict[str, str] = dict(pair.split("=") for pair in _OVERLAPS.split())
# Medbullets rows of the R1 trace file (`realidx`) that rewrite a MedQA-USMLE test case (its 0-based line), found the
# same way before the detector saw them (the pairs with rapidfuzz ratio >= 64 or >= 3 shared options, read by hand):
# same patient, history, vitals and answer, the vignette reworded (56: the options replaced by figure letters).
MEDBULLETS_OVERLAPS = {22: "1142", 56: "851", 145: "724", 272: "241", 275: "724"}

KINDS = (
    "verbatim",
    "recase",  # re-cased, re-spaced, re-punctuated
    "shuffle",  # options shuffled and relabelled
    "stem_only",  # the stem alone, no options
    "options_only",  # the options with a reworded stem (topic words kept, everything else rewritten)
    "wrapped",  # inside an instruction prompt (half of them with the options also inline)
    "truncated",  # the stem cut to about 70% of its words
    "reordered",  # the stem's sentences in another order
    "synonyms",  # about 15% of the words (stem and options) replaced
    "new_options",  # the stem verbatim under another item's options
)
TUNING_KINDS = ("verbatim", "shuffle", "options_only", "truncated", "synonyms", "new_options")
HELDOUT_KINDS = ("recase", "stem_only", "wrapped", "reordered", "options_unrelated")
LABELS = "ABCDEFGHIJ"

WRAPPERS = (
    "Answer the following USMLE question. Think step by step, then give the letter of the correct option.\n\n{q}",
    "You are a medical expert. Read the question carefully and choose the single best answer.\nQuestion: {q}",
    "Please solve this medical exam problem:\n{q}\nPut your final answer within \\boxed{{}}.",
    "The following are multiple choice questions (with answers) about medicine.\n\n{q}\nAnswer:",
    "Q: {q}\nA: Let's think step by step.",
    "Here is a question from a medical licensing exam. {q} Explain your reasoning before answering.",
    "Below is a clinical MCQ taken from a board review book. Identify the correct choice.\n{q}",
    "[INST] As an experienced physician, reason carefully about this case. {q} [/INST]",
    "Task: medical question answering.\nInput: {q}\nOutput the option letter only.",
    "Consider this scenario and respond with the most appropriate option. {q}",
)
REWORD_TEMPLATES = (
    "Regarding {w}, which of the following is correct?",
    "Pick the right answer about {w}.",
    "In a case involving {w}, what is the best choice?",
    "{w}: choose the most appropriate option.",
    "Which option fits best given {w}?",
)
SYNONYMS: dict[str, list[str]] = {
    "patient": ["individual", "client"], "man": ["male", "gentleman"], "woman": ["female", "lady"],
    "boy": ["male child"], "girl": ["female child"], "presents": ["comes in", "is seen"],
    "comes": ["presents", "arrives"], "brought": ["taken", "carried"], "physician": ["doctor", "clinician"],
    "doctor": ["physician"], "history": ["record", "background"], "shows": ["reveals", "demonstrates"],
    "reveals": ["shows", "discloses"], "examination": ["exam", "assessment"], "following": ["subsequent", "listed"],
    "most": ["greatest"], "likely": ["probable"], "appropriate": ["suitable", "fitting"], "next": ["subsequent"],
    "step": ["move", "action"], "management": ["treatment", "care"], "treatment": ["therapy", "management"],
    "diagnosis": ["condition", "disorder"], "cause": ["reason", "origin"], "caused": ["produced", "brought about"],
    "increased": ["raised", "elevated"], "decreased": ["reduced", "lowered"], "elevated": ["raised", "high"],
    "low": ["reduced", "decreased"], "high": ["elevated", "raised"], "pain": ["discomfort", "ache"],
    "severe": ["intense", "serious"], "mild": ["slight", "minor"], "acute": ["sudden", "abrupt"],
    "chronic": ["long-standing", "persistent"], "days": ["d"], "weeks": ["wk"], "months": ["mo"],
    "ago": ["previously", "before"], "past": ["previous", "prior"], "blood": ["serum"], "pressure": ["tension"],
    "temperature": ["temp"], "pulse": ["heart rate"], "normal": ["typical", "unremarkable"],
    "abnormal": ["atypical", "irregular"], "small": ["little", "tiny"], "large": ["big", "sizable"],
    "common": ["frequent", "usual"], "commonly": ["frequently", "usually"], "rare": ["uncommon", "infrequent"],
    "true": ["correct", "accurate"], "false": ["incorrect", "untrue"], "correct": ["right", "accurate"],
    "used": ["employed", "utilized"], "use": ["utilize", "employ"], "drug": ["medication", "agent"],
    "drugs": ["medications", "agents"], "medication": ["drug", "medicine"], "disease": ["disorder", "illness"],
    "associated": ["linked", "connected"], "seen": ["observed", "noted"], "found": ["discovered", "detected"],
    "test": ["assay", "study"], "level": ["concentration", "value"], "levels": ["concentrations", "values"],
    "shortness": ["lack"], "breath": ["breathing"], "fever": ["pyrexia", "high temperature"],
    "swelling": ["edema", "enlargement"], "weakness": ["fatigue", "feebleness"], "started": ["began", "commenced"],
    "began": ["started"], "year": ["yr"], "old": ["aged"], "child": ["kid", "youngster"], "infant": ["baby"],
    "mother": ["mom"], "father": ["dad"], "important": ["significant", "key"], "effect": ["action", "result"],
    "function": ["role", "action"], "structure": ["formation"], "best": ["optimal", "ideal"], "first": ["initial"],
    "after": ["following"], "before": ["prior to"], "during": ["throughout"], "because": ["since", "as"],
    "recent": ["latest"], "recently": ["lately"], "worse": ["aggravated"], "worsening": ["deteriorating"],
    "risk": ["danger", "hazard"], "type": ["kind", "form"], "cells": ["cytes"], "cell": ["cyte"],
    "nerve": ["neural fiber"], "muscle": ["muscular tissue"], "bone": ["osseous tissue"], "heart": ["cardiac organ"],
    "kidney": ["renal organ"], "liver": ["hepatic organ"], "lung": ["pulmonary organ"], "skin": ["dermis"],
    "infection": ["sepsis"], "tumor": ["neoplasm", "mass"], "cancer": ["malignancy", "carcinoma"],
    "injury": ["trauma", "damage"], "surgery": ["operation"], "hospital": ["medical center"], "emergency": ["urgent"],
    "department": ["unit"], "given": ["administered"], "taking": ["on"], "reports": ["states", "says"],
    "states": ["reports"], "denies": ["rejects"], "noted": ["observed"], "which": ["what"], "what": ["which"],
    "not": ["never"], "except": ["but not", "other than"], "all": ["every"], "is": ["represents"],
    "are": ["represent"], "of": ["regarding"],
}  # fmt: skip
FILLER = ("notably", "apparently", "reportedly", "clearly", "possibly", "indeed", "certainly", "basically")
WORD = re.compile(r"\w+(?:[-']\w+)*", re.UNICODE)
SENTENCE = re.compile(r"(?<=[.?!])\s+(?=[A-Z0-9])")


def _options(item: dict[str, Any]) -> list[tuple[str, str]]:
    return [(o["label"], o["text"]) for o in item.get("options") or []]


def _answer_text(item: dict[str, Any]) -> str | None:
    return dict(_options(item)).get(item.get("answer_label") or "")


def _row(item: dict[str, Any], uid: str, question: str, options: list[str], answer: str | None, **kw: Any) -> dict:
    labels = LABELS[: len(options)]
    answer_label = next((lab for lab, text in zip(labels, options, strict=True) if text == answer), "")
    return {
        "id": f"gen/train/{uid}",
        "source": "gen",
        "source_split": "train",
        "source_id": uid,
        "question": question,
        "options": [{"label": lab, "text": text} for lab, text in zip(labels, options, strict=True)],
        "answer_label": answer_label,
        "context": kw.get("context", item.get("context")),
        "meta": "{}",
        "license": "test",
    }


def _recase(text: str, rng: random.Random) -> str:
    words = text.split()
    out = []
    for w in words:
        r = rng.random()
        w = w.upper() if r < 0.2 else w.lower() if r < 0.6 else w.title() if r < 0.8 else w
        w = re.sub(r"[.,;:!?]+$", lambda m: rng.choice(["", " ,", " ;", "...", " !"]), w) if rng.random() < 0.7 else w
        out.append(w)
    joined = ""
    for w in out:
        joined += w + rng.choice([" ", "  ", "\n", " \t "])
    return joined.replace("(", "[ ").replace(")", " ]").replace("-", " - ")


def _synonyms(text: str, rate: float, rng: random.Random, quota: list[int]) -> str:
    words = WORD.findall(text)
    if not words:
        return text
    n = max(1, round(rate * len(words))) if quota[0] > 0 else 0
    quota[0] -= n
    swappable = [i for i, w in enumerate(words) if w.lower() in SYNONYMS]
    rng.shuffle(swappable)
    taken = set(swappable)
    others = [i for i in range(len(words)) if i not in taken]
    rng.shuffle(others)
    chosen = set((swappable + others)[:n])
    spans = list(WORD.finditer(text))
    out, last = [], 0
    for i, m in enumerate(spans):
        out.append(text[last : m.start()])
        w = m.group(0)
        if i in chosen:
            w = rng.choice(SYNONYMS[w.lower()]) if w.lower() in SYNONYMS else rng.choice(FILLER)
        out.append(w)
        last = m.end()
    out.append(text[last:])
    return "".join(out)


def _reword(stem: str, common: set[str], rng: random.Random) -> str:
    """A reworded stem: the topic words (not among the corpus's common words) kept in order, the rest rewritten."""
    words = [w for w in WORD.findall(stem) if w.lower() not in common]
    keep = [w for w in words if rng.random() < 0.6] or words[:2]
    return rng.choice(REWORD_TEMPLATES).format(w=" ".join(keep) if keep else "this topic")


def _shuffled(values: list[str], rng: random.Random) -> list[str]:
    """`values` in another order (rotated by one when shuffling keeps finding the same order)."""
    new = values[:]
    for _ in range(10):
        rng.shuffle(new)
        if new != values:
            return new
    return values[1:] + values[:1]


def disguise(
    item: dict[str, Any],
    kind: str,
    rng: random.Random,
    uid: str,
    *,
    common: set[str] | None = None,
    unrelated_stem: str | None = None,
    other: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A disguised copy of `item` (a canonical row) of the given kind: a new canonical row, id `gen/train/uid`.

    `other` is the clean question whose options `new_options` takes.
    """
    stem = item["question"]
    opts = [t for _, t in _options(item)]
    ans = _answer_text(item)
    if kind == "verbatim":
        return _row(item, uid, stem, opts, ans)
    if kind == "recase":
        mapped = {t: _recase(t, rng).strip() for t in opts}
        return _row(item, uid, _recase(stem, rng), [mapped[t] for t in opts], mapped.get(ans or ""))
    if kind == "shuffle":
        return _row(item, uid, stem, _shuffled(opts, rng), ans)
    if kind == "stem_only":
        return _row(item, uid, stem, [], None, context=None)
    if kind == "options_only":
        new_stem = unrelated_stem if unrelated_stem is not None else _reword(stem, common or set(), rng)
        new = opts[:]
        rng.shuffle(new)
        return _row(item, uid, new_stem, new, ans)
    if kind == "wrapped":
        q = stem
        if rng.random() < 0.5 and opts:
            q += "\n" + "\n".join(f"{lab}. {t}" for lab, t in zip(LABELS, opts, strict=False))
        return _row(item, uid, rng.choice(WRAPPERS).format(q=q), opts, ans)
    if kind == "truncated":
        words = stem.split()
        return _row(item, uid, " ".join(words[: max(1, math.ceil(0.7 * len(words)))]), opts, ans)
    if kind == "reordered":
        parts = SENTENCE.split(stem.strip())
        if len(parts) < 2:
            parts = [p.strip() for p in stem.split(",") if p.strip()]
            if len(parts) < 2:
                return _row(item, uid, stem, opts, ans)
            return _row(item, uid, ", ".join(parts[1:] + parts[:1]), opts, ans)
        return _row(item, uid, " ".join(_shuffled(parts, rng)), opts, ans)
    if kind == "synonyms":
        total = len(WORD.findall(stem)) + sum(len(WORD.findall(t)) for t in opts)
        quota = [max(1, round(0.15 * total))]
        new_stem = _synonyms(stem, 0.15, rng, quota)
        mapped = {t: _synonyms(t, 0.15, rng, quota) for t in opts}
        return _row(item, uid, new_stem, [mapped[t] for t in opts], mapped.get(ans or ""))
    if kind == "new_options":
        assert other is not None, "new_options needs a clean question to take the options of"
        new = [t for _, t in _options(other)][: max(2, len(opts))]
        return _row(item, uid, stem, new, _answer_text(other) if _answer_text(other) in new else new[0])
    raise ValueError(f"unknown disguise kind '{kind}'")


def common_words(texts: Iterable[str], top: int = 400) -> set[str]:
    """The `top` most frequent lower-cased words of a corpus (what a rewording does not keep)."""
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update({w.lower() for w in WORD.findall(t)})
    return {w for w, _ in counts.most_common(top)}


def recombine(items: list[dict[str, Any]], n: int, rng: random.Random, prefix: str = "clean") -> list[dict[str, Any]]:
    """`n` clean MCQ rows made by recombining sentences and options of clean items (numbers perturbed)."""
    sentences = [s for it in items for s in SENTENCE.split(it["question"].split("Answer Choices:")[0].strip()) if s]
    option_pool = [t for it in items for _, t in _options(it)]
    out = []
    for k in range(n):
        m = rng.choice((1, 1, 2, 3, 4, 6, 8))
        parts = [rng.choice(sentences) for _ in range(m)]
        q = " ".join(parts)
        q = re.sub(r"\d+", lambda x: str(int(x.group(0)) + rng.randint(1, 9)), q)
        opts = rng.sample(option_pool, rng.choice((4, 4, 5)))
        uid = f"{prefix}-{k}"
        row = _row({"context": None}, uid, q, opts, rng.choice(opts))
        out.append(row)
    return out


TARGETS = ("medqa_us_test", "medmcqa_val", "pubmedqa_test", "mmlu_medical_test")
HARD_NEGATIVES = ("medxpertqa_r_test", "medxpertqa_u_test", "medexqa_test")  # the MCQ files the generated rows mix
TUNING_NEGATIVES = ("medxpertqa_r_test", "medxpertqa_u_test", "mmlu_medical_dev")
HELDOUT_NEGATIVES = ("medexqa_test", "pubmedqa_nontest", "mmlu_pro_other", "medbullets")
MMLU_PRO_FILE = "traces/deepseek_r1_mmlu_pro_hard.json"
MEDBULLETS_FILE = "traces/deepseek_r1_medbullets_hard.json"


def item_id(row: dict[str, Any]) -> str:
    """A benchmark row's natural id (`meta.item_id` where its source sets one, else `source_id`)."""
    return str(json.loads(row.get("meta") or "{}").get("item_id") or row["source_id"])


def load_sets(bench_dir: Path) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The four available target benchmarks as (name, table), and the clean MCQ hard negatives (overlaps set aside)."""
    from medr1_data.benchmarks import load_benchmark

    targets = []
    for name in TARGETS:
        got, loaded = load_benchmark(name, bench_dir)
        targets.append((got, loaded.table))
    negatives = []
    for name in HARD_NEGATIVES:
        _, loaded = load_benchmark(name, bench_dir)
        negatives += [r for r in loaded.table.to_pylist() if r["source_id"] not in MEDXPERTQA_OVERLAPS]
    return targets, negatives


def real_sets(data: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Real clean hard negatives and real positives (rows that really copy a target item), per set, from `data`.

    Negatives: MedXpertQA minus MEDXPERTQA_OVERLAPS; MMLU dev minus its 5 rows equal to a test row (same question and
    options); MedExpQA; PubMedQA's 500 expert-labelled non-test abstracts; MMLU-Pro's rows from MMLU subjects that are
    no target (its `src`); the 80 distinct Medbullets questions of the R1 trace file (USMLE-style vignettes, 5 options)
    that rewrite no MedQA test case. Positives: the MedXpertQA overlaps, the 5 equal MMLU dev rows, MMLU-Pro's 53 rows
    from the six target subjects (their stems verbatim, 4-10 options) and the 4 Medbullets rewrites of MedQA cases.
    """
    from medr1_data.benchmarks import load_benchmark
    from medr1_data.sources import load
    from medr1_data.sources.mmlu_medical import SUBJECTS

    bench = data / "benchmarks"
    neg: dict[str, list[dict[str, Any]]] = {}
    pos: dict[str, list[dict[str, Any]]] = {}
    for name in ("medxpertqa_r_test", "medxpertqa_u_test", "medexqa_test"):
        rows = load_benchmark(name, bench)[1].table.to_pylist()
        neg[name] = [r for r in rows if r["source_id"] not in MEDXPERTQA_OVERLAPS]
        pos[f"{name}_medqa"] = [r for r in rows if r["source_id"] in MEDXPERTQA_OVERLAPS]
    test = load_benchmark("mmlu_medical_test", bench)[1].table.to_pylist()
    seen = {(r["question"].strip(), tuple(o["text"].strip() for o in r["options"])) for r in test}
    dev = load(f"mmlu_medical={bench / 'mmlu_medical' / 'dev'}", "dev").table.to_pylist()
    equal = [(r["question"].strip(), tuple(o["text"].strip() for o in r["options"])) in seen for r in dev]
    neg["mmlu_medical_dev"] = [r for r, e in zip(dev, equal, strict=True) if not e]
    pos["mmlu_medical_dev_equal"] = [r for r, e in zip(dev, equal, strict=True) if e]
    neg["pubmedqa_nontest"] = load(f"pubmedqa={bench / 'pubmedqa'}", "train").table.to_pylist()
    neg["mmlu_pro_other"], pos["mmlu_pro_mmlu"] = [], []
    for r in json.loads((data / MMLU_PRO_FILE).read_text(encoding="utf-8")):
        opts = list(r["options"].values())
        row = _row({"context": None}, f"mmlu_pro-{r['realidx']}", r["question"], opts, r["options"][r["answer_idx"]])
        (pos["mmlu_pro_mmlu"] if r["src"] in {f"ori_mmlu-{s}" for s in SUBJECTS} else neg["mmlu_pro_other"]).append(row)
    neg["medbullets"], pos["medbullets_medqa"] = [], []
    seen = set()
    for r in json.loads((data / MEDBULLETS_FILE).read_text(encoding="utf-8")):
        opts = list(r["options"].values())
        if (r["question"].strip(), tuple(opts)) in seen:  # 5 questions are in the file twice
            continue
        seen.add((r["question"].strip(), tuple(opts)))
        row = _row({"context": None}, f"medbullets-{r['realidx']}", r["question"], opts, r["options"][r["answer_idx"]])
        (pos["medbullets_medqa"] if r["realidx"] in MEDBULLETS_OVERLAPS else neg["medbullets"]).append(row)
    return neg, pos


def disguised_rows(
    targets: list[tuple[str, Any]],
    per_kind: int | None,
    seed: int,
    common: set[str],
    kinds: Iterable[str] = KINDS,
    unrelated: list[str] | None = None,
    clean: list[dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Disguised copies of `per_kind` items per kind (all items when None): rows and (kind, benchmark, item id).

    `options_unrelated` (added whenever `unrelated` stems are given) pairs the options with an unrelated stem;
    `new_options` takes the options of `clean` questions. Each is skipped without its input.
    """
    items = [(name, r) for name, t in targets for r in t.to_pylist()]
    rng = random.Random(seed)
    rows, truth = [], []
    kinds = [*kinds, *(["options_unrelated"] if unrelated and "options_unrelated" not in kinds else [])]
    kinds = [k for k in kinds if (k != "new_options" or clean) and (k != "options_unrelated" or unrelated)]
    for kind in kinds:
        picked = items if per_kind is None else random.Random(f"{seed}-{kind}").sample(items, per_kind)
        for k, (name, item) in enumerate(picked):
            uid = f"{kind}-{k}"
            if kind == "options_unrelated":
                rows.append(disguise(item, "options_only", rng, uid, unrelated_stem=rng.choice(unrelated or [""])))
            elif kind == "new_options":
                rows.append(disguise(item, kind, rng, uid, other=rng.choice(clean or [])))
            else:
                rows.append(disguise(item, kind, rng, uid, common=common))
            truth.append((kind, name, item_id(item)))
    return rows, truth
