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
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# MedXpertQA rows (`realidx`) that really overlap a MedQA-USMLE test item (its content id), set aside before MedXpertQA
# and MedExpQA serve as clean hard negatives. Found without the detector: rapidfuzz ratio of every (hard negative,
# test item) canonical-stem pair (process.cdist) plus exact shared option texts; the 140 pairs with
# token_set_ratio >= 70 and the same patient age, >= 3 shared numbers or >= 2 shared options (or >= 2 shared options,
# the same answer text and token_set_ratio >= 55) were read by hand. These 77 describe the same case: a few verbatim
# stems with 10 options instead of 4, the rest rewrites (same patient, history and findings; some with the age, sex
# or the question changed). No MedExpQA row, and no overlap with MedMCQA, PubMedQA or MMLU, was found.
MEDXPERTQA_OVERLAPS: dict[str, str] = {
    "Text-8": "ha0b9145ec24431af",
    "Text-39": "ha5f1ee961216c22f",
    "Text-42": "h3495ac8ed0bfca0a",
    "Text-73": "h6c9171ac9e1182b1",
    "Text-92": "hfff27402b2183b42",
    "Text-93": "h4854407f2198a141",
    "Text-98": "he4ac790a4a915c7f",
    "Text-133": "hfbafc0459ad4cd04",
    "Text-160": "hee606f114cb350eb",
    "Text-196": "hc7333b2d52e43e2c",
    "Text-342": "haeca3ab46872b68d",
    "Text-358": "hcf6bc2f2d0874ba5",
    "Text-361": "h678897fc1144a642",
    "Text-366": "hc263840d59ceb47d",
    "Text-375": "h5481df35211e8f76",
    "Text-403": "h8c2b022c75e585ce",
    "Text-445": "hd49a66c77a7a6a32",
    "Text-458": "haba392a844cdf4c8",
    "Text-591": "hbe87e9b4b3b5fbde",
    "Text-669": "h7cdcde5e796ab021",
    "Text-722": "h7f8f68fae9f2fd06",
    "Text-820": "h02c8669f77b541da",
    "Text-823": "hfdce5c8f549c0fa9",
    "Text-896": "h75db8fcc5c01eb48",
    "Text-908": "h00a752a7b7b6764f",
    "Text-919": "h5c9fc1c60152def7",
    "Text-937": "h36cfd9d53b6629d3",
    "Text-941": "h3ae1b47434f4cd41",
    "Text-942": "hfb369c5037efc17a",
    "Text-954": "h7c65a5de11d68da9",
    "Text-1017": "hf560b8067afa4ac7",
    "Text-1040": "ha1e2a9ae5553879d",
    "Text-1044": "hb92c22ea2870e088",
    "Text-1057": "h2a305ccf66fc5480",
    "Text-1089": "h437b3306d6bc4b3a",
    "Text-1189": "h2389cba4d49980d6",
    "Text-1194": "h9936e9ea1c352289",
    "Text-1228": "hf901d63d627209ea",
    "Text-1230": "h5f33637ad9c031af",
    "Text-1263": "h0191092db7d3f590",
    "Text-1320": "h88ef2f165862b7f9",
    "Text-1383": "hdb0dbde31e5ecdf5",
    "Text-1461": "hbd02bc1dc3990a93",
    "Text-1551": "h2cdeced55e9ae915",
    "Text-1570": "h0d4bf25e75489e1a",
    "Text-1588": "hf4acfefb89320dc4",
    "Text-1786": "hc45f44b74b086fdf",
    "Text-1804": "he3e3dfab8e9fea53",
    "Text-1834": "h28cb5401a9f6c446",
    "Text-1859": "h7fb49daba4506604",
    "Text-1864": "hf370063b8d499d53",
    "Text-1868": "h117d47e55f9b40f7",
    "Text-1893": "hdfb439d3ee653fc7",
    "Text-1905": "hc97ef3b22f80c262",
    "Text-1909": "h62bbc6867d2c3952",
    "Text-1912": "h43d7a70533789971",
    "Text-1976": "he00f348521f2f876",
    "Text-1980": "hcaf7ffba71c802a3",
    "Text-1988": "hf1b91b36e72b79df",
    "Text-2005": "hea015c58c744480d",
    "Text-2042": "hb59a8db269484b0b",
    "Text-2082": "hfa5180d610bb5f5f",
    "Text-2093": "hf70b9bbcd4d53ea8",
    "Text-2105": "h3df066462a91a248",
    "Text-2143": "h57215f0482d01068",
    "Text-2202": "hb16316d90ee4e08c",
    "Text-2209": "hcf62376a89ef5429",
    "Text-2251": "h0a20cc81c26fc051",
    "Text-2253": "h81f27dab32a19ca8",
    "Text-2298": "hadcc38641bd148ee",
    "Text-2339": "h7dd933972e59e009",
    "Text-2353": "h7cdcde5e796ab021",
    "Text-2355": "h077e02cb2e04f90a",
    "Text-2391": "h0d631a7f06ca92a4",
    "Text-2395": "h07728857a887b98a",
    "Text-2445": "hd1ebdd6711f1eb04",
    "Text-2446": "h5fb21b6cd62e1681",
}

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
)
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
    "patient": ["individual", "client"],
    "man": ["male", "gentleman"],
    "woman": ["female", "lady"],
    "boy": ["male child"],
    "girl": ["female child"],
    "presents": ["comes in", "is seen"],
    "comes": ["presents", "arrives"],
    "brought": ["taken", "carried"],
    "physician": ["doctor", "clinician"],
    "doctor": ["physician"],
    "history": ["record", "background"],
    "shows": ["reveals", "demonstrates"],
    "reveals": ["shows", "discloses"],
    "examination": ["exam", "assessment"],
    "following": ["subsequent", "listed"],
    "most": ["greatest"],
    "likely": ["probable"],
    "appropriate": ["suitable", "fitting"],
    "next": ["subsequent"],
    "step": ["move", "action"],
    "management": ["treatment", "care"],
    "treatment": ["therapy", "management"],
    "diagnosis": ["condition", "disorder"],
    "cause": ["reason", "origin"],
    "caused": ["produced", "brought about"],
    "increased": ["raised", "elevated"],
    "decreased": ["reduced", "lowered"],
    "elevated": ["raised", "high"],
    "low": ["reduced", "decreased"],
    "high": ["elevated", "raised"],
    "pain": ["discomfort", "ache"],
    "severe": ["intense", "serious"],
    "mild": ["slight", "minor"],
    "acute": ["sudden", "abrupt"],
    "chronic": ["long-standing", "persistent"],
    "days": ["d"],
    "weeks": ["wk"],
    "months": ["mo"],
    "ago": ["previously", "before"],
    "past": ["previous", "prior"],
    "blood": ["serum"],
    "pressure": ["tension"],
    "temperature": ["temp"],
    "pulse": ["heart rate"],
    "normal": ["typical", "unremarkable"],
    "abnormal": ["atypical", "irregular"],
    "small": ["little", "tiny"],
    "large": ["big", "sizable"],
    "common": ["frequent", "usual"],
    "commonly": ["frequently", "usually"],
    "rare": ["uncommon", "infrequent"],
    "true": ["correct", "accurate"],
    "false": ["incorrect", "untrue"],
    "correct": ["right", "accurate"],
    "used": ["employed", "utilized"],
    "use": ["utilize", "employ"],
    "drug": ["medication", "agent"],
    "drugs": ["medications", "agents"],
    "medication": ["drug", "medicine"],
    "disease": ["disorder", "illness"],
    "associated": ["linked", "connected"],
    "seen": ["observed", "noted"],
    "found": ["discovered", "detected"],
    "test": ["assay", "study"],
    "level": ["concentration", "value"],
    "levels": ["concentrations", "values"],
    "shortness": ["lack"],
    "breath": ["breathing"],
    "fever": ["pyrexia", "high temperature"],
    "swelling": ["edema", "enlargement"],
    "weakness": ["fatigue", "feebleness"],
    "started": ["began", "commenced"],
    "began": ["started"],
    "year": ["yr"],
    "old": ["aged"],
    "child": ["kid", "youngster"],
    "infant": ["baby"],
    "mother": ["mom"],
    "father": ["dad"],
    "important": ["significant", "key"],
    "effect": ["action", "result"],
    "function": ["role", "action"],
    "structure": ["formation"],
    "best": ["optimal", "ideal"],
    "first": ["initial"],
    "after": ["following"],
    "before": ["prior to"],
    "during": ["throughout"],
    "because": ["since", "as"],
    "recent": ["latest"],
    "recently": ["lately"],
    "worse": ["aggravated"],
    "worsening": ["deteriorating"],
    "risk": ["danger", "hazard"],
    "type": ["kind", "form"],
    "cells": ["cytes"],
    "cell": ["cyte"],
    "nerve": ["neural fiber"],
    "muscle": ["muscular tissue"],
    "bone": ["osseous tissue"],
    "heart": ["cardiac organ"],
    "kidney": ["renal organ"],
    "liver": ["hepatic organ"],
    "lung": ["pulmonary organ"],
    "skin": ["dermis"],
    "infection": ["sepsis"],
    "tumor": ["neoplasm", "mass"],
    "cancer": ["malignancy", "carcinoma"],
    "injury": ["trauma", "damage"],
    "surgery": ["operation"],
    "hospital": ["medical center"],
    "emergency": ["urgent"],
    "department": ["unit"],
    "given": ["administered"],
    "taking": ["on"],
    "reports": ["states", "says"],
    "states": ["reports"],
    "denies": ["rejects"],
    "noted": ["observed"],
    "which": ["what"],
    "what": ["which"],
    "not": ["never"],
    "except": ["but not", "other than"],
    "all": ["every"],
    "is": ["represents"],
    "are": ["represent"],
    "of": ["regarding"],
}
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
) -> dict[str, Any]:
    """A disguised copy of `item` (a canonical row) of the given kind: a new canonical row, id `gen/train/uid`."""
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
HARD_NEGATIVES = ("medxpertqa_r_test", "medxpertqa_u_test", "medexqa_test")


def load_sets(bench_dir: Path) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """The four available target benchmarks as (name, table), and the clean hard negatives (overlaps set aside)."""
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


def disguised_rows(
    targets: list[tuple[str, Any]],
    per_kind: int | None,
    seed: int,
    common: set[str],
    kinds: Iterable[str] = KINDS,
    unrelated: list[str] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """Disguised copies of `per_kind` items per kind (all items when None): rows and (kind, benchmark, item id).

    With `unrelated` stems, an extra kind `options_unrelated` pairs the options with an unrelated stem.
    """
    items = [(name, r) for name, t in targets for r in t.to_pylist()]
    rng = random.Random(seed)
    rows, truth = [], []
    kinds = list(kinds) + (["options_unrelated"] if unrelated else [])
    for kind in kinds:
        picked = items if per_kind is None else random.Random(f"{seed}-{kind}").sample(items, per_kind)
        for k, (name, item) in enumerate(picked):
            uid = f"{kind}-{k}"
            if kind == "options_unrelated":
                rows.append(disguise(item, "options_only", rng, uid, unrelated_stem=rng.choice(unrelated or [""])))
            else:
                rows.append(disguise(item, kind, rng, uid, common=common))
            truth.append((kind, name, item["source_id"]))
    return rows, truth
