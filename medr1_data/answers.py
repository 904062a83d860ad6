"""The one answer extractor: the option a response committed to last, shared by verification and the eval tasks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

CUE = re.compile(
    r"\b(thus|therefore|hence|so|answer|correct|best|most (?:likely|appropriate|probable|consistent|accurate)|"
    r"diagnosis is|fits)\b",
    re.IGNORECASE,
)
MULTIPLE = re.compile(r"^[\s*(\[]*[A-Z][)\]]?(?:\s*(?:,|/|&|\band\b|\bor\b)\s*[(\[]?[A-Z][)\]]?)+[\s.*]*$")
REASONING_TAIL_CHARS = 2000  # the reasoning fallback reads only the end of the thinking
BARE_STRIP = "*_()[]. :"  # what may surround a label given alone ("**C**", "(C).")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class Extraction(NamedTuple):
    """The chosen label (or None), the rule that found it, and where (`response` or `reasoning`)."""

    label: str | None
    rule: str
    where: str


def _option_pairs(options: Sequence[Any]) -> list[tuple[str, str]]:
    out = []
    for o in options:
        if isinstance(o, dict):
            out.append((str(o["label"]), str(o["text"])))
        else:
            out.append((str(o[0]), str(o[1])))
    return out


def _norm(text: str) -> str:
    return re.sub(r"[\s*_`.:;!()\[\]\"']+", " ", text).strip().lower()


def after_thinking(text: str) -> str:
    """The part of a completion after its last `</think>` (the whole text when there is none)."""
    return text.rsplit("</think>", 1)[-1]


Rule = tuple[str, re.Pattern[str], "re.Pattern[str] | None"]
WINDOW = (40, 80)  # a rule with a trigger is searched only from 40 characters before to 80 after each trigger


def _trigger(pattern: str) -> re.Pattern[str]:
    """A cheap regex over the lowercased text that every match of a slow rule contains."""
    return re.compile(pattern)


class _Patterns:
    """Regexes built once per label set (A-D, A-J, ...) and per set of word answers (yes/no/maybe)."""

    def __init__(self, labels: tuple[str, ...], words: bool) -> None:
        letters = "".join(sorted(set(labels) - {"I"}))
        # "I" is also the pronoun: "Final answer: I think it is D" must not read as option I.
        pronoun_i = (
            r"I(?!\s+(?:think|believe|am|would|will|guess|need|have|had|was|can|should|must|feel|chose|choose"
            r"|pick|go|agree|suspect)\b)"
        )
        letter = rf"(?:[{letters}]|{pronoun_i})" if "I" in labels else rf"[{letters}]"
        # Any word is captured where word answers exist; `_resolve` keeps only the options' own words.
        words_alt = r"|(?i:[a-z]{2,20})\b" if words else ""
        x = rf"(?P<x>{letter}(?![\w'’-]){words_alt})"
        # Inside an answer tag or a box the writer meant a label, so a lowercase letter counts too.
        xi = rf"(?P<x>[{''.join(sorted(set(labels)))}](?![\w'’-]){words_alt})"
        self.explicit: list[Rule] = [
            ("answer_tag", re.compile(rf"<answer>\s*(?:option\s*)?[*(\[\s]*{xi}", re.IGNORECASE), None),
            ("boxed", re.compile(rf"\\boxed\{{\s*(?:\\text(?:bf)?\{{)?\s*(?:option\s*)?\(?{xi}", re.IGNORECASE), None),
        ]
        self.statement: list[Rule] = [
            (
                "answer_is",
                re.compile(
                    rf"(?i:\b(?:answer(?:\s+(?:here|then|now))?(?:\s+(?:is|would\s+be|should\s+be|will\s+be|=))?"
                    rf"|(?:correct|best|right|final)\s+(?:option|choice)(?:\s+is)?))\s*[:：]?\s*[*_\s]*(?i:option\s+|choice\s+)?[(\[]?{x}"
                ),
                _trigger(r"answer|option|choice"),
            ),
            (
                "commit_verb",
                re.compile(
                    rf"(?i:\b(?:it(?:'s|’s|\s+is|\s+must\s+be|\s+would\s+be)|go(?:ing)?\s+with|choose|select|pick))"
                    rf"\s+(?i:option\s+|choice\s+)?[(\[*]*{x}"
                ),
                _trigger(r"\bit(?:'s|’s|\s+(?:is|must|would))|\bgo(?:ing)?\s+with|\bchoose|\bselect|\bpick"),
            ),
            (
                "is_correct",
                re.compile(
                    rf"(?:\*\*)?\(?{x}\)?(?:\*\*)?\s+(?i:(?:is|fits)\s+(?:the\s+)?(?:correct|right|best|answer)(?![\w-]))"
                ),
                _trigger(r"\b(?:is|fits)\s+(?:the\s+)?(?:correct|right|best|answer)"),
            ),
        ]
        self.bare = re.compile(rf"^[\s*_#>(\[]*(?i:answer\s*[:：]?\s*)?[*_(\[]*{x}[)\].:]?[*_\s]*$")
        self.mention = re.compile(
            rf"(?i:option\s+|choice\s+)(?:\(|\*\*)?{x}|\({x.replace('?P<x>', '?P<y>')}\)"
            rf"|\*\*{x.replace('?P<x>', '?P<z>')}(?:[.):]\s[^*\n]*)?\*\*"
        )


_CACHE: dict[tuple[tuple[str, ...], bool], _Patterns] = {}


def _patterns(labels: tuple[str, ...], words: bool) -> _Patterns:
    key = (labels, words)
    if key not in _CACHE:
        _CACHE[key] = _Patterns(labels, words)
    return _CACHE[key]


def _resolve(token: str, labels: tuple[str, ...], by_word: dict[str, str]) -> str | None:
    if token in labels:
        return token
    if len(token) == 1 and token.upper() in labels:
        return token.upper()
    return by_word.get(token.lower())


def _last_in_tier(
    tier: list[Rule], text: str, labels: tuple[str, ...], by_word: dict[str, str]
) -> tuple[str, str] | None:
    """(label, rule) of the match that ends last in the text, over all rules of one tier."""
    best: tuple[int, str, str] | None = None
    starts = _trigger_starts(tier, text)
    for i, (rule, pattern, trigger) in enumerate(tier):
        # Python's re has no literal prefilter for the slow rules: search only around their trigger words.
        matches = pattern.finditer(text) if trigger is None else _windowed(pattern, text, starts[i])
        for m in matches:
            label = _resolve(m.group("x"), labels, by_word)
            if label and (best is None or m.end() > best[0]):
                best = (m.end(), label, rule)
    return (best[1], best[2]) if best else None


_TIER_TRIGGERS: dict[int, re.Pattern[str]] = {}


def _trigger_starts(tier: list[Rule], text: str) -> list[list[int]]:
    """Start offsets of each rule's trigger in the lowercased text, found in one pass for the whole tier."""
    starts: list[list[int]] = [[] for _ in tier]
    if all(t is None for _, _, t in tier):
        return starts
    combined = _TIER_TRIGGERS.get(id(tier))
    if combined is None:
        parts = [f"(?P<r{i}>{t.pattern})" for i, (_, _, t) in enumerate(tier) if t is not None]
        combined = _TIER_TRIGGERS[id(tier)] = re.compile("|".join(parts))
    for m in combined.finditer(text.lower()):
        starts[int(m.lastgroup[1:])].append(m.start())
    return starts


def _windowed(pattern: re.Pattern[str], text: str, starts: list[int]) -> list[re.Match[str]]:
    out: list[re.Match[str]] = []
    seen: set[tuple[int, int]] = set()
    before, after = WINDOW
    for pos in starts:
        lo, hi = max(0, pos - before), min(len(text), pos + after)
        for m in pattern.finditer(text, lo, hi):
            if m.end() == hi < len(text):  # the window's end may have cut a word: re-match on the whole text
                m = pattern.match(text, m.start())
            if m is not None and m.span() not in seen:
                seen.add(m.span())
                out.append(m)
    return out


def extract(response: str | None, options: Sequence[Any], reasoning: str | None = None) -> Extraction:
    """The label the response committed to last; the reasoning's own final statement only when the response has none."""
    labels = tuple(str(o["label"]) if isinstance(o, dict) else str(o[0]) for o in options)
    text = after_thinking(response or "").strip()
    bare = text.strip(BARE_STRIP)
    if bare in labels:  # the commonest R1 response is the letter alone; no other rule can read it otherwise
        return Extraction(bare, "bare_label", "response")
    if MULTIPLE.match(text) and len(set(re.findall(r"[A-Z]", text)) & set(labels)) > 1:
        return Extraction(None, "multiple_labels", "response")  # "D,F,G,I" commits to no single option
    pairs = _option_pairs(options)
    # Word answers (PubMedQA's yes/no/maybe) are accepted in place of a letter when they are option texts.
    by_word = {t.strip().lower(): lab for lab, t in pairs if len(t.split()) == 1 and not t.strip().isupper()}
    pats = _patterns(labels, bool(by_word))
    if text:
        for tier in (pats.explicit, pats.statement):
            if found := _last_in_tier(tier, text, labels, by_word):
                return Extraction(found[0], found[1], "response")
        lines = text.splitlines()
        for line in (lines[-1], lines[0]):
            m = pats.bare.match(line)
            if m and (label := _resolve(m.group("x"), labels, by_word)):
                return Extraction(label, "bare_label", "response")
        if label := _by_option_text(text, pairs):
            return Extraction(label, "option_text", "response")
        if label := _conclusion(text, pats, labels, by_word):
            return Extraction(label, "conclusion", "response")
    if reasoning:
        tail = reasoning[-REASONING_TAIL_CHARS:]
        for tier in (pats.explicit, pats.statement[:1]):
            if found := _last_in_tier(tier, tail, labels, by_word):
                return Extraction(found[0], found[1], "reasoning")
    return Extraction(None, "none", "response" if text else "empty")


def _by_option_text(text: str, pairs: list[tuple[str, str]]) -> str | None:
    """An option's text given alone as the last line (or the whole response)."""
    last = _norm(text.splitlines()[-1])
    whole = _norm(text)
    for lab, opt in pairs:
        o = _norm(opt)
        if o and (last == o or whole == o or last == f"{lab.lower()} {o}"):
            return lab
    return None


def _conclusion(text: str, pats: _Patterns, labels: tuple[str, ...], by_word: dict[str, str]) -> str | None:
    """The first option mention in the last sentence that states a conclusion ("Thus, ... (C) is ...")."""
    for sentence in reversed([s for s in SENTENCE_END.split(text) if s.strip()]):
        if not CUE.search(sentence):
            continue
        m = pats.mention.search(sentence)
        if m:
            token = next(g for g in m.groups() if g)
            return _resolve(token, labels, by_word)
    return None
