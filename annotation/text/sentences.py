"""Split model text into sentences with character spans (for sentence-level factuality labels).

Rules, in order:

* a fenced code block (```…```) is one segment of its own and is never split inside;
* inline code (`…`) is never split inside;
* a line break ends a sentence (list items and headings are sentences of their own);
* ``.``, ``!`` or ``?`` (possibly repeated, possibly followed by closing quotes or brackets) ends a
  sentence when whitespace follows, except after a known abbreviation (``Dr.``, ``e.g.``, ``U.S.``),
  a single capital initial (``J. K. Rowling``) or a list number at the start of a line (``1. First``),
  and except when the next word starts in lower case (``etc. and more``).

A decimal (``3.14``), a version (``1.2.3``) or a domain (``example.com``) never splits: no whitespace
follows the period. Spans are ``(start, end)`` character offsets into the original text with surrounding
whitespace trimmed, so ``text[start:end]`` is the sentence.
"""

import bisect
import re

_ABBREVIATION_WORDS = """
    mr mrs ms dr prof sr jr st mt ft vs v e.g i.e cf fig figs eq eqs no nos vol vols pp p ch sec
    inc ltd co corp dept est approx ca al et u.s u.k u.n a.m p.m ph.d m.d b.a m.a jan feb mar apr
    jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun gen col lt sgt rev hon gov sen rep
"""
ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())  # noqa: SIM905 (a word list reads better)
_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)")
_LIST_NUMBER = re.compile(r"[ \t]*(\d+|[a-zA-Z]|[ivxIVX]+)\.$")
_NEXT = re.compile(r"[ \t]*([^ \t])")


def _protected(text: str, pattern: re.Pattern) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in pattern.finditer(text)]


def _inside(position: int, regions: list[tuple[int, int]]) -> bool:
    """Whether ``position`` falls in one of the sorted, disjoint ``regions``."""
    index = bisect.bisect_right(regions, (position, float("inf"))) - 1
    return index >= 0 and regions[index][0] <= position < regions[index][1]


def _is_boundary(text: str, line_start: int, match: re.Match) -> bool:
    """Whether the terminator ``match`` (in the line beginning at ``line_start``) ends a sentence."""
    end = match.start()
    word_start = max(text.rfind(" ", line_start, end), text.rfind("\t", line_start, end), line_start - 1) + 1
    word = text[word_start:end]
    if match.group().startswith(".") and len(match.group().rstrip("\"'”’)]")) == 1:
        bare = word.lstrip("(\"'“‘[").lower()
        if bare in ABBREVIATIONS or (len(bare) == 1 and word[-1:].isupper()):
            return False
        if len(word) <= 6 and _LIST_NUMBER.match(text, line_start, match.end()):
            return False
    following = _NEXT.match(text, match.end())
    return following is None or not following.group(1).islower()


def _split_prose(text: str, start: int, end: int, code: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans of sentences in ``text[start:end]`` (no fenced code inside)."""
    cuts = []
    line_start = start
    for line in text[start:end].splitlines(keepends=True):
        line_end = line_start + len(line)
        for match in _END.finditer(text, line_start, line_end):
            if not _inside(match.start(), code) and _is_boundary(text, line_start, match):
                cuts.append(match.end())
        cuts.append(line_end)
        line_start = line_end
    spans, previous = [], start
    for cut in [*cuts, end]:
        spans.append((previous, cut))
        previous = cut
    return [span for span in (_trim(text, s, e) for s, e in spans) if span]


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the sentences of ``text``, in order, whitespace trimmed."""
    text = text or ""
    fences = _protected(text, _FENCE)
    inline = _protected(text, _INLINE_CODE)
    spans: list[tuple[int, int]] = []
    position = 0
    for fence_start, fence_end in [*fences, (len(text), len(text))]:
        spans.extend(_split_prose(text, position, fence_start, inline))
        block = _trim(text, fence_start, fence_end)
        if block:
            spans.append(block)
        position = fence_end
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (see the module docstring for the rules)."""
    return [text[start:end] for start, end in sentence_spans(text)]


def spans_for_sentences(text: str, sentences: list[str]) -> list[tuple[int, int] | None]:
    """Locate already split sentences in ``text`` left to right; None for one that cannot be found."""
    spans: list[tuple[int, int] | None] = []
    position = 0
    for sentence in sentences:
        needle = str(sentence).strip()
        found = text.find(needle, position) if needle else -1
        if found < 0:
            spans.append(None)
            continue
        spans.append((found, found + len(needle)))
        position = found + len(needle)
    return spans
