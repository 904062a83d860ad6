"""The one answer extractor: the option a response committed to last, shared by verification, scoring and eval tasks."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

# Every number the extractor uses, in one place. Measured on tests/fixtures/answers/ (`python benchmarks/answers.py`).
REASONING_TAIL_CHARS = 2000  # the reasoning fallback reads only the end of the thinking
HEAD_GAP_CHARS = 60  # "the most likely <up to 60 characters> is X": how far a committing adjective may be from "is"
TARGET_CHARS = 200  # what follows "the answer is" is compared with option texts over at most 200 characters
CONTENT_CHARS = 200  # an <answer> tag is read up to 200 characters when it is never closed
LIST_GAP_LINES = 2  # lines of one option list may be separated by at most 2 other non-blank lines
LIST_MIN_OPTIONS = 2  # lines naming at least 2 different options at their start make an option list
NEGATION_CHARS = 16  # an option mention this close after "not", "than", "except", ... is not a conclusion
LINE_SLACK_CHARS = 16  # a line longer than the longest option text by more than 16 characters is no option alone
SOLE_MAX_SENTENCES = 3  # a short answer (at most 3 sentences) that names one option and no other commits to it
BARE_STRIP = "*_()[]. :"  # what may surround a label given alone ("**C**", "(C).")
# Rules that decide "no answer" on purpose: verification does not fall back to the reasoning after them.
NO_FALLBACK = frozenset({"multiple_labels", "hedge"})
HEDGE = "\x00hedge"  # a committing sentence that names two options ("the answer is B or C")

MULTIPLE = re.compile(r"^[\s*(\[]*[A-Z][)\]]?(?:\s*(?:,|/|&|\band\b|\bor\b)\s*[(\[]?[A-Z][)\]]?)+[\s.*]*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
CUE = re.compile(
    r"\b(thus|therefore|hence|so|answer|correct|best|most (?:likely|appropriate|probable|consistent|accurate)|"
    r"diagnosis is|fits)\b",
    re.IGNORECASE,
)
# Thinking a response may carry inline: (opening, closing). Text before the last closing is not the answer; an
# opening that never closed means the model has not answered yet.
THINKING = (("<think>", "</think>"), ("<|im_start|>think", "<|im_start|>answer"), ("<unused94>", "<unused95>"))
HUATUO = re.compile(r"^#{1,3}\s*(Thinking|Final Response)\s*$", re.MULTILINE | re.IGNORECASE)  # HuatuoGPT-o1

_ADJ = (
    r"(?:most\s+(?:likely|appropriate|probable|consistent|accurate|suitable|effective|sensitive|specific)"
    r"|best|likeliest|correct|right|preferred|final)"
)
_VERB = r"(?:is|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be)"
_COLON = r"(?P<colon>[:：=\-–—])"


class Head(NamedTuple):
    """A committing head (lowercase regex), whether an option's text may follow it, and its literal `starts`.

    Python's `re` has no literal prefilter for a pattern that opens with `\b` or an alternation, and `(?i)` slows every
    step: each head is tried only where its `starts` regex (a plain alternation of its first words) matches.
    """

    rule: str
    pattern: re.Pattern[str]
    allow_text: bool
    starts: re.Pattern[str]


_ADJ_WORDS = "most|best|likeliest|correct|right|preferred|final"
HEADS: tuple[Head, ...] = (
    Head(
        "answer_is",
        re.compile(
            rf"(?:\b(?:(?:{_ADJ}|my)\s+)?(?:answer\b|ans\b\.?)(?:\s+(?:here|then|now|to\s+(?:the|this)\s+question))?"
            rf"|\b(?:correct|best|right|final)\s+(?:option|choice))(?:\s+{_VERB})?\s*{_COLON}?"
        ),
        True,
        re.compile(rf"{_ADJ_WORDS}|my|ans"),
    ),
    Head(
        "committing_sentence",
        re.compile(
            rf"(?:\b{_ADJ}\b[^.\n;:!?]{{0,{HEAD_GAP_CHARS}}}?\b{_VERB}"
            r"|\b(?:diagnosis|next\s+step|treatment|management|mechanism|pattern|drug\s+of\s+choice)\b"
            rf"[^.\n;:!?]{{0,{HEAD_GAP_CHARS}}}?\b(?:is|would\s+be))\s*{_COLON}?"
        ),
        True,
        re.compile(rf"{_ADJ_WORDS}|diagnosis|next|treatment|management|mechanism|pattern|drug"),
    ),
    Head(  # "I would choose C", "I'll go with C", "going with C": the verb alone says it
        "commit_verb",
        re.compile(r"\b(?:go(?:ing)?\s+with|choose|select|pick|opt\s+for)\b\s*(?P<colon>:)?"),
        True,
        re.compile(r"go(?:ing)?\s+with|choose|select|pick|opt\s+for"),
    ),
    Head(
        "commit_verb",
        re.compile(r"\bit(?:'s|’s|\s+is|\s+must\s+be|\s+would\s+be)\b\s*(?P<colon>:)?"),
        False,
        re.compile(r"it(?:'s|’s|\s+is|\s+must|\s+would)"),
    ),
    Head(
        "cjk_answer",
        re.compile(r"(?:(?:正确)?(?:答案|选项)\s*(?:是|为|為|应为|應為)?|(?:故|因此|应)选)\s*(?P<colon>[:：])?"),
        False,
        re.compile(r"正确|答案|选项|故|因此|应"),
    ),
)
TARGET = re.compile(
    r"[\s*_`]*(?:(?i:option|choice)\s*)?(?P<open>[(\['‘\"“]?)\s*(?P<x>[A-Za-z])(?P<close>[)\]'’\"”]?)"
    r"(?![A-Za-z0-9-])(?!['’][A-Za-z])"
)
EITHER = re.compile(r"[\s*_]*(?i:either)\b")
# "A patient with ..." (an article) and "I think ..." (the pronoun) are no labels; "A because ..." is one.
ARTICLE_AFTER = {
    "A": re.compile(r"\s+(?!(?:because|since|as|and|or|is|in|given|here|for|which|was|would|seems|are)\b)(?:\d|[a-z])"),
    "I": re.compile(r"\s+(?!(?:because|since|as|and|or|is|given)\b)[a-z]"),
}
WORD_TARGET = re.compile(r"[\s*_`\"']*(yes|no|maybe)\b", re.IGNORECASE)
LOWER_END = re.compile(r"\s*(?:$|[.,;:!?)\n*]|i\.e\.)")
HEDGE_TAIL = re.compile(
    r"[)\]*\s]*(?:,|/|&|\bor\b|\band\b|\bvs\.?|\bversus\b)\s*(?:(?i:option|choice)\s*)?(?P<open>[(\['*]*)\s*"
    r"(?P<y>[A-Za-z])(?![A-Za-z0-9-])"
)
NEG_TAIL = re.compile(
    r"[)\]*\s]*(?:is|are|would\s+be|seems|can\s+be)\s+(?:not\b|incorrect|wrong|unlikely|less\b|inappropriate"
    r"|excluded|ruled\s+out|eliminated)",
    re.IGNORECASE,
)
TEXT_LEAD = re.compile(r"[\s*_`\"']*(?:(?i:a|an|the)\s+)?")
OR_TAIL = re.compile(r"[\s*_]*(?:,|/|\bor\b|\band\b|\bvs\b\.?|\bversus\b)\s*(?:(?:a|an|the)\s+)?", re.IGNORECASE)
WORD_AFTER = re.compile(r"(?=[\s*_\"'”’)]*(?:[.,;:!?\n]|$|\s(?:because|since|as|given)\b))")
IS_CORRECT = re.compile(
    r"\b(?:is|would\s+be|seems\s+to\s+be)\s+(?:the\s+)?(?:(?:correct|right|best)\b|most\s+(?:likely|appropriate|"
    r"probable)\b|answer\b)"
)
IS_CORRECT_STARTS = re.compile(r"is\s+(?:the\s+)?[crbma]|would\s+be|seems\s+to")
LABEL_BEFORE = re.compile(
    r"(?:^|[\n.!?:;,(\[*]\s*|\b(?i:option|choice|answer|so|thus|hence|therefore|then|and|but|that|think|believe)\s+)"
    r"(?:(?i:option|choice)\s+)?[(\[]?(?P<x>[A-Z])[)\]]?[*_]*$"
)
PAREN_LABEL_END = re.compile(r"\s*\((?:(?i:option|choice)\s+)?(?P<x>[A-Z])\)[*_]*$")
LIST_LINE = re.compile(
    r"^[ \t>]*(?:[-*•+]\s*)?(?:\*\*|__)?\s*(?:(?i:option|choice)\s+)?[(\[]?(?P<x>[A-Z])\s*[.):\]]"
    r"(?:\*\*|__)?(?:\s|$)(?P<rest>.*)$"
)
LINE_LABEL = re.compile(
    r"^[\s*_#>]*(?:(?i:answer|option|choice)\s*[:：]?\s*)?[*_(\[]*(?P<x>[A-Z])\s*[.):\]\-]\s*(?P<rest>.*)$"
)
BARE_LINE = re.compile(r"^[\s*_#>(\[]*(?:(?i:answer)\s*[:：]?\s*)?[*_(\[]*(?P<x>[A-Z])[)\].:]?[*_\s]*$")
VERDICT = re.compile(
    r"^[\s:.\-–—*(]*(?:correct|right|true|✓|✔)\b(?!-)|\b(?:this\s+is|is)\s+the\s+(?:correct|right|best)\s+"
    r"(?:answer|option|choice)\b|\(correct\)",
    re.IGNORECASE,
)
WORD_START = re.compile(r"^[\s*_>#]*(?P<w>yes|no|maybe)\b[*_]*\s*(?:[,.;:!—–-]|$)", re.IGNORECASE)
MENTION = re.compile(
    r"(?i:option|choice)\s+(?:\(|\*\*)?(?P<x>[A-Z])\b|\((?P<y>[A-Z])\)|\*\*(?P<z>[A-Z])(?:[.):]\s[^*\n]*)?\*\*"
)
NEGATION = re.compile(r"\b(?:not|n't|than|except|excluding|exclude|rule\s+out|ruled\s+out|unlike|nor)\b", re.I)
UNSURE = re.compile(
    r"\b(?:not|no|never|neither|nor|may|might|could|possibl\w*|perhaps|consider\w*|unclear|unsure|uncertain|cannot"
    r"|can't|depend\w*|need\w*|either|both|or|unless|if|whether|exclud\w*|ruled?\s+out|unlikely|less|vs|versus)\b",
    re.IGNORECASE,
)
BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
ANSWER_TAG = re.compile(rf"<answer>((?:(?!</answer>).){{0,{CONTENT_CHARS}}})(?:</answer>|$)", re.DOTALL)
LATEX = re.compile(r"\\(?:text(?:bf|it|rm)?|mathrm|mathbf|textsf)\s*\{([^{}]*)\}")


class Extraction(NamedTuple):
    """The chosen label (or None), the rule that found it, and where (`response` or `reasoning`)."""

    label: str | None
    rule: str
    where: str


PUNCT_RUN = re.compile(r"[\s*_`.,:;!?()\[\]\"']+")
WORD_RUN = re.compile(r"[^\s*_`.,:;!?()\[\]\"']+")
NOT_NEWLINE = re.compile(r"[^\n]")
SPACE_RUN = re.compile(r"\s+")
LEAD_END = re.compile(r"(?:^|\s)(?:the|a|an|[a-j][.)])$")
CONTENT_LABEL = re.compile(r"[\s*_(\[]*(?i:option\s*)?(?P<x>[A-Za-z])(?![A-Za-z0-9-])")
CJK_STARTS = frozenset("正答选故因应")  # the first characters of every `cjk_answer` start


def _norm(text: str) -> str:
    return PUNCT_RUN.sub(" ", text).strip().lower()


def final_part(text: str) -> str:
    """The answer part of a response: after its inline thinking; empty when a thinking block never closed."""
    for opening, closing in THINKING:
        if closing in text:
            text = text.rsplit(closing, 1)[1]
        elif opening in text:
            return ""
    heads = list(HUATUO.finditer(text))
    if heads:
        finals = [m for m in heads if m.group(1).lower().startswith("final")]
        return text[finals[-1].end() :] if finals else ""
    return text


@functools.lru_cache(maxsize=4096)
def _option_set(
    pairs: tuple[tuple[str, str], ...],
) -> tuple[tuple[str, ...], list[tuple[str, str]], int, dict[str, str]]:
    """Labels, normalised option texts (longest first), the longest text's length, and the word answers."""
    normed = [(lab, _norm(t)) for lab, t in pairs]
    texts = sorted(((lab, n) for lab, n in normed if n), key=lambda p: -len(p[1]))
    # Word answers (PubMedQA's yes/no/maybe) are accepted in place of a letter when they are option texts.
    by_word = {t.strip().lower(): lab for lab, t in pairs if len(t.split()) == 1 and not t.strip().isupper()}
    return tuple(lab for lab, _ in pairs), texts, max((len(t) for _, t in pairs), default=0), by_word


class _Context:
    """One response and one option set: labels, option texts, and the text with option lists blanked out."""

    def __init__(self, text: str, options: Sequence[Any]) -> None:
        pairs = tuple(
            (str(o["label"]), str(o["text"])) if isinstance(o, dict) else (str(o[0]), str(o[1])) for o in options
        )
        self.text = text
        self.labels, self.texts, self.longest, self.by_word = _option_set(pairs)
        self.list_lines: list[str] = []  # every line of an option list
        self.masked = self._mask_lists()

    def _list_label(self, line: str) -> str | None:
        m = LIST_LINE.match(line)
        if m and m["x"] in self.labels:
            return m["x"]
        if len(line) > self.longest + LINE_SLACK_CHARS:
            return None
        n = _norm(line)
        return next((lab for lab, t in self.texts if n == t), None) if n else None

    def _mask_lists(self) -> str:
        """The text with every line of an option list (2+ options at line starts, close together) blanked."""
        lines = self.text.splitlines(keepends=True)
        runs: list[list[tuple[int, str]]] = []
        gap = LIST_GAP_LINES + 1
        for i, line in enumerate(lines):
            label = self._list_label(line.rstrip("\r\n"))
            if label:
                if gap > LIST_GAP_LINES or not runs:
                    runs.append([])
                runs[-1].append((i, label))
                gap = 0
            elif line.strip():
                gap += 1
        masked = list(lines)
        for run in runs:
            if len({label for _, label in run}) >= LIST_MIN_OPTIONS:
                for i, _ in run:
                    self.list_lines.append(lines[i].rstrip("\r\n"))
                    masked[i] = NOT_NEWLINE.sub(" ", lines[i])
        return "".join(masked)

    def option_at(self, text: str, pos: int) -> tuple[str | None, int]:
        """The option whose text starts at `pos` (after an article), and where it ends; HEDGE for "X or Y"."""
        pos = TEXT_LEAD.match(text, pos).end()  # type: ignore[union-attr]
        if text[pos : pos + 1] in (".", "!", "?", ";", ")"):
            return None, pos  # "not the answer here. Nasometer: ..." names no option after "answer"
        seg = _norm(text[pos : pos + TARGET_CHARS]) + " "
        for lab, t in self.texts:
            if seg.startswith(t + " ") and not seg[len(t) + 1 :].startswith("-"):
                end = pos + _raw_len(text, pos, t)
                tail = OR_TAIL.match(text, end)
                if tail and (other := self.option_at(text, tail.end())[0]) and other != lab:
                    return HEDGE, end
                return lab, end
        return None, pos


def _raw_len(text: str, pos: int, normalized: str) -> int:
    """How many characters of `text` from `pos` normalise to `normalized` (an option text found there)."""
    words = normalized.split()
    for n, m in enumerate(WORD_RUN.finditer(text[pos:]), 1):
        if n == len(words):
            return m.end()
    return len(text) - pos


def _letter(ctx: _Context, text: str, m: re.Match[str], colon: bool) -> str | None:
    """The option label a TARGET match names, or None for an article, a pronoun or a letter that is no option."""
    x, wrapped = m["x"], bool(m["open"] or m["close"])
    if x.isupper():
        if x not in ctx.labels:
            return None
        if x in ARTICLE_AFTER and not wrapped and ARTICLE_AFTER[x].match(text, m.end()):
            return None  # "Answer: A patient with ...", "Final answer: I think it is D"
        return x
    if x.upper() not in ctx.labels:
        return None
    if wrapped:
        return x.upper()  # "(b)", "'c'"
    if (colon or x not in "ai") and LOWER_END.match(text, m.end()):
        return x.upper()  # "ANSWER: d", "the answer is c."
    return None


def _target(ctx: _Context, text: str, pos: int, colon: bool, allow_text: bool) -> str | None:
    """What a committing head at `pos` commits to: a label, HEDGE, or None (nothing readable)."""
    if EITHER.match(text, pos):
        return HEDGE
    m = TARGET.match(text, pos)
    if m and (label := _letter(ctx, text, m, colon)):
        if NEG_TAIL.match(text, m.end()):
            return None  # "Answer A is incorrect"
        h = HEDGE_TAIL.match(text, m.end())
        other = h is not None and h["y"].upper() in ctx.labels and h["y"].upper() != label
        # "B or C" and "(b) or (c)" name two options; "D, a ruptured aneurysm" does not.
        if other and (h["y"].isupper() or h["open"] or m["x"].islower()):  # type: ignore[index]
            return HEDGE
        return label
    if ctx.by_word:
        w = WORD_TARGET.match(text, pos)
        if w and w[1].lower() in ctx.by_word and WORD_AFTER.match(text, w.end()):
            return ctx.by_word[w[1].lower()]
    if allow_text:
        return ctx.option_at(text, pos)[0]
    return None


def _lower(text: str) -> str:
    """`text` lowercased character by character, so that every offset still points at the same character."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _search(pattern: re.Pattern[str], starts: re.Pattern[str], low: str) -> Iterator[re.Match[str]]:
    """The matches of a lowercase `pattern` in `low` that begin where `starts` matches."""
    for t in starts.finditer(low):
        if m := pattern.match(low, t.start()):
            yield m


def _statements(ctx: _Context, text: str, heads: Sequence[Head] = HEADS) -> Extraction | None:
    """The last committing statement ("the answer is C", "C is correct", "I'd go with C", "答案是C")."""
    best: tuple[int, str, str] | None = None
    low = _lower(text)
    for head in heads:
        if head.rule == "cjk_answer" and (text.isascii() or CJK_STARTS.isdisjoint(low)):
            continue
        for m in _search(head.pattern, head.starts, low):
            label = _target(ctx, text, m.end(), bool(m.groupdict().get("colon")), head.allow_text)
            if label and (best is None or m.end() > best[0]):
                best = (m.end(), label, head.rule)
    if len(heads) == len(HEADS):  # the reasoning fallback reads only "the answer is X"
        for m in _search(IS_CORRECT, IS_CORRECT_STARTS, low):
            label = _before(ctx, text, m.start())
            if label and (best is None or m.start() > best[0]):
                best = (m.start(), label, "is_correct")
    return _pick(best)


def _pick(best: tuple[int, str, str] | None) -> Extraction | None:
    """The (position, label, rule) kept as an Extraction; a hedge commits to nothing."""
    if best is None:
        return None
    return Extraction(None, "hedge", "response") if best[1] == HEDGE else Extraction(best[1], best[2], "response")


def _before(ctx: _Context, text: str, end: int) -> str | None:
    """The option named just before "is correct": a label ("(D)", "option C") or an option's text ("Lithium")."""
    seg = text[max(0, end - TARGET_CHARS) : end].rstrip()
    if (m := PAREN_LABEL_END.search(seg) or LABEL_BEFORE.search(seg)) and m["x"] in ctx.labels:
        return m["x"]
    tail = SPACE_RUN.sub(" ", seg.rsplit("\n", 1)[-1]).rstrip("*_ ").lower()
    for lab, t in ctx.texts:
        if tail.endswith(t):
            lead = tail[: -len(t)].rstrip(" *_")
            if not lead or lead[-1] in ".!?:#>" or LEAD_END.search(lead):
                return lab
    return None


def _explicit(ctx: _Context, text: str) -> Extraction | None:
    """The last readable `<answer>…</answer>` or `\\boxed{…}`."""
    best: tuple[int, str, str] | None = None
    for rule, pattern in (("answer_tag", ANSWER_TAG), ("boxed", BOXED)):
        for m in pattern.finditer(text):
            label = _content(ctx, m.group(1))
            if label and (best is None or m.end() > best[0]):
                best = (m.end(), label, rule)
    return _pick(best)


def _content(ctx: _Context, raw: str) -> str | None:
    """What a tag or box holds: a label (any case), a word answer or an option's text; HEDGE for "B or C"."""
    s = LATEX.sub(r"\1", LATEX.sub(r"\1", raw)).replace("$", "").strip()  # \text{\textbf{C}} too
    m = CONTENT_LABEL.match(s)
    if m and m["x"].upper() in ctx.labels:
        label = m["x"].upper()
        h = HEDGE_TAIL.match(s, m.end())
        if h and h["y"].upper() in ctx.labels and h["y"].upper() != label:
            return HEDGE
        rest = _norm(s[m.end() :])
        if not rest or any(rest.startswith(t) for _, t in ctx.texts) or m["x"].isupper():
            return label
    word = _norm(s)
    if word in ctx.by_word:
        return ctx.by_word[word]
    return ctx.option_at(s, 0)[0] if s else None


def _lines(ctx: _Context) -> Extraction | None:
    """A label, `X) option text`, or an option's text alone on the first or last line (or as the whole response)."""
    lines = [ln for ln in ctx.masked.splitlines() if ln.strip()]
    for line in (ctx.masked, lines[-1], lines[0]) if lines else ():
        m = BARE_LINE.match(line)
        if m and m["x"] in ctx.labels:
            return Extraction(m["x"], "bare_label", "response")
        m = LINE_LABEL.match(line)
        if m and m["x"] in ctx.labels:
            rest, own = _norm(m["rest"]), dict(ctx.texts).get(m["x"], "")
            if own and (rest == own or rest.startswith(own + " ")):
                return Extraction(m["x"], "option_text", "response")
        n = _norm(line)
        for lab, t in ctx.texts:
            if n == t:
                return Extraction(lab, "option_text", "response")
    return None


def _verdict(ctx: _Context) -> Extraction | None:
    """Exactly one line of an option list marked correct ("C. Acute mesenteric ischemia - Correct.")."""
    marked = set()
    for line in ctx.list_lines:
        m = LIST_LINE.match(line)
        if not m:
            continue
        rest, own = m["rest"], dict(ctx.texts).get(m["x"], "")
        if own and _norm(rest).startswith(own):
            rest = rest[_raw_len(rest, 0, own) :]
        if VERDICT.search(rest) or re.search(rf"\b{m['x']}\)?\s+is\s+(?:the\s+)?(?:correct|right|best)\b", rest):
            marked.add(m["x"])  # "D: ... So D is correct."
    return Extraction(marked.pop(), "option_verdict", "response") if len(marked) == 1 else None


def _word_start(ctx: _Context) -> Extraction | None:
    """PubMedQA: the response opens with yes, no or maybe ("No, the study did not show a benefit.")."""
    m = WORD_START.match(ctx.masked.lstrip())
    if ctx.by_word and m and m["w"].lower() in ctx.by_word:
        return Extraction(ctx.by_word[m["w"].lower()], "word_answer", "response")
    return None


def _conclusion(ctx: _Context) -> Extraction | None:
    """The option mentioned in the last sentence that states a conclusion ("Thus, ... (C) is ..."), if only one."""
    for sentence in reversed([s for s in SENTENCE_END.split(ctx.masked) if s.strip()]):
        if not CUE.search(sentence):
            continue
        named = set()
        for m in MENTION.finditer(sentence):
            label = next(g for g in m.groups() if g)
            if label in ctx.labels and not NEGATION.search(sentence[max(0, m.start() - NEGATION_CHARS) : m.start()]):
                named.add(label)
        if named:
            return Extraction(named.pop(), "conclusion", "response") if len(named) == 1 else None
    return None


def _sole_mention(ctx: _Context) -> Extraction | None:
    """A short answer that names one option and no other, without doubt ("Clopidogrel (C) should be added.")."""
    sentences = [x for x in SENTENCE_END.split(ctx.masked) if x.strip()]
    if not sentences or len(sentences) > SOLE_MAX_SENTENCES or UNSURE.search(ctx.masked):
        return None
    if {"yes", "no", "maybe"} & set(ctx.by_word):
        return None  # "no" and "yes" are everyday words: only an explicit reading counts for word answers
    named = {next(g for g in m.groups() if g) for m in MENTION.finditer(ctx.masked)} & set(ctx.labels)
    padded = f" {_norm(ctx.masked)} "
    named |= {lab for lab, t in ctx.texts if f" {t} " in padded}
    return Extraction(named.pop(), "sole_mention", "response") if len(named) == 1 else None


def extract(response: str | None, options: Sequence[Any], reasoning: str | None = None) -> Extraction:
    """The label the response committed to last; the reasoning's own final statement only when the response has none."""
    labels = tuple(str(o["label"]) if isinstance(o, dict) else str(o[0]) for o in options)
    text = final_part(response or "").strip()
    bare = text.strip(BARE_STRIP)
    if bare in labels:  # the commonest R1 response is the letter alone; no other rule can read it otherwise
        return Extraction(bare, "bare_label", "response")
    if MULTIPLE.match(text) and len(set(re.findall(r"[A-Z]", text)) & set(labels)) > 1:
        return Extraction(None, "multiple_labels", "response")  # "D,F,G,I" commits to no single option
    if text:
        ctx = _Context(text, options)
        found = _explicit(ctx, text) or _statements(ctx, ctx.masked) or _lines(ctx) or _verdict(ctx)
        if found := found or _word_start(ctx) or _conclusion(ctx) or _sole_mention(ctx):
            return found
    if reasoning:
        tail = reasoning[-REASONING_TAIL_CHARS:]
        ctx = _Context(tail, options)
        found = _explicit(ctx, tail) or _statements(ctx, ctx.masked, HEADS[:1])
        if found and found.label:
            return found._replace(where="reasoning")
    return Extraction(None, "none", "response" if text else "empty")
