"""The one answer extractor: the option a response committed to last, shared by verification and the eval tasks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

CUE = re.compile(
    r"\b(thus|therefore|hence|so|answer|correct|best|most (?:likely|appropriate|probable|consistent|accurate)|"
    r"choice|diagnosis is|option)\b",
    re.IGNORECASE,
)
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


class _Patterns:
    """Regexes built once per label set (A-D, A-J, ...) and per set of word answers (yes/no/maybe)."""

    def __init__(self, labels: tuple[str, ...], words: tuple[str, ...]) -> None:
        letters = "".join(sorted(set(labels) - {"I"}))
        # "I" is also the pronoun: "Final answer: I think it is D" must not read as option I.
        pronoun_i = (
            r"I(?!\s+(?:think|believe|am|would|will|guess|need|have|had|was|can|should|must|feel|chose|choose"
            r"|pick|go|agree|suspect)\b)"
        )
        letter = rf"(?:[{letters}]|{pronoun_i})" if "I" in labels else rf"[{letters}]"
        alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        words_alt = rf"|(?i:{alt})\b" if alt else ""
        x = rf"(?P<x>{letter}(?![\w'’-]){words_alt})"
        # Inside an answer tag or a box the writer meant a label, so a lowercase letter counts too.
        xi = rf"(?P<x>[{''.join(sorted(set(labels)))}](?![\w'’-]){words_alt})"
        self.explicit = [
            ("answer_tag", re.compile(rf"<answer>\s*(?:option\s*)?[*(\[\s]*{xi}", re.IGNORECASE)),
            ("boxed", re.compile(rf"\\boxed\{{\s*(?:\\text(?:bf)?\{{)?\s*(?:option\s*)?\(?{xi}", re.IGNORECASE)),
        ]
        self.statement = [
            (
                "answer_is",
                re.compile(
                    rf"(?i:\b(?:answer(?:\s+(?:is|would\s+be|should\s+be|will\s+be|=))?|(?:correct|best|right|final)\s+"
                    rf"(?:option|choice)(?:\s+is)?))\s*[:：]?\s*[*_\s]*(?i:option\s+|choice\s+)?[(\[]?{x}"
                ),
            ),
            (
                "commit_verb",
                re.compile(
                    rf"(?i:\b(?:it(?:'s|’s|\s+is|\s+must\s+be|\s+would\s+be)|go(?:ing)?\s+with|choose|select|pick))"
                    rf"\s+(?i:option\s+|choice\s+)?[(\[*]*{x}"
                ),
            ),
            ("is_correct", re.compile(rf"(?:\*\*)?\(?{x}\)?(?:\*\*)?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))")),
        ]
        self.bare = re.compile(rf"^[\s*_#>(\[]*(?i:answer\s*[:：]?\s*)?[*_(\[]*{x}[)\].:]?[*_\s]*$")
        self.mention = re.compile(
            rf"(?i:option\s+|choice\s+)(?:\(|\*\*)?{x}|\({x.replace('?P<x>', '?P<y>')}\)"
            rf"|\*\*{x.replace('?P<x>', '?P<z>')}(?:[.):]\s[^*\n]*)?\*\*"
        )


_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], _Patterns] = {}


def _patterns(labels: tuple[str, ...], words: tuple[str, ...]) -> _Patterns:
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
    tier: list[tuple[str, re.Pattern[str]]], text: str, labels: tuple[str, ...], by_word: dict[str, str]
) -> tuple[str, str] | None:
    """(label, rule) of the match that ends last in the text, over all rules of one tier."""
    best: tuple[int, str, str] | None = None
    for rule, pattern in tier:
        for m in pattern.finditer(text):
            label = _resolve(m.group("x"), labels, by_word)
            if label and (best is None or m.end() > best[0]):
                best = (m.end(), label, rule)
    return (best[1], best[2]) if best else None


def extract(response: str | None, options: Sequence[Any], reasoning: str | None = None) -> Extraction:
    """The label the response committed to last; the reasoning's own final statement only when the response has none."""
    pairs = _option_pairs(options)
    labels = tuple(lab for lab, _ in pairs)
    # Word answers (PubMedQA's yes/no/maybe) are accepted in place of a letter when they are option texts.
    by_word = {t.strip().lower(): lab for lab, t in pairs if len(t.split()) == 1 and not t.strip().isupper()}
    pats = _patterns(labels, tuple(by_word))
    text = after_thinking(response or "").strip()
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
        tail = reasoning[-2000:]
        for tier in (pats.explicit, pats.statement[:1]):
            if found := _last_in_tier(tier, tail, labels, by_word):
                return Extraction(found[0], found[1], "reasoning")
    return Extraction(None, "none", "response" if text else "empty")


def extract_label(response: str | None, options: Sequence[Any], reasoning: str | None = None) -> str | None:
    """Shortcut for `extract(...).label`."""
    return extract(response, options, reasoning).label


def _by_option_text(text: str, pairs: list[tuple[str, str]]) -> str | None:
    """An option's text given alone as the last line (or the whole response)."""
    last = _norm(text.splitlines()[-1])
    whole = _norm(text)
    for lab, opt in pairs:
        o = _norm(opt)
        if o and (last == o or whole == o or re.fullmatch(rf"{re.escape(lab.lower())}\s+{re.escape(o)}", last)):
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
