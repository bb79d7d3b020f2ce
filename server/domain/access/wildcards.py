"""Glob matching for policies: ``*`` matches any run of characters, ``?`` exactly one.

Policies come from callers, so the matcher must stay fast on hostile patterns. A regex
made of many ``.*`` backtracks polynomially in the number of stars; instead the pattern
is split at its stars into fixed-length segments, and each segment is matched at its
leftmost possible position. For segments of fixed length that greedy choice is optimal
(a later match only leaves less room for the rest), so matching is one left-to-right
pass with ``str.find`` doing the searching in C.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Wildcard:
    """A compiled glob. ``ignore_case`` lower-cases both sides (IAM action names)."""

    text: str
    ignore_case: bool
    _segments: tuple[str, ...]
    _searchers: tuple[re.Pattern[str] | None, ...]
    # Fast paths for the shapes policies mostly use: "*", "kms:*", exact names.
    _any: bool
    _prefix: str | None

    @classmethod
    def compile(cls, text: str, *, ignore_case: bool = False) -> Wildcard:
        pattern = text.lower() if ignore_case else text
        segments = tuple(pattern.split("*"))
        searchers = tuple(
            re.compile("".join("." if ch == "?" else re.escape(ch) for ch in segment), re.DOTALL)
            if "?" in segment
            else None
            for segment in segments
        )
        simple_prefix = len(segments) == 2 and segments[1] == "" and searchers[0] is None
        return cls(
            text=text,
            ignore_case=ignore_case,
            _segments=segments,
            _searchers=searchers,
            _any=pattern == "*",
            _prefix=segments[0] if simple_prefix else None,
        )

    @property
    def is_literal(self) -> bool:
        return len(self._segments) == 1 and self._searchers[0] is None

    def matches(self, value: str) -> bool:
        if self._any:
            return True
        subject = value.lower() if self.ignore_case else value
        if self._prefix is not None:
            return subject.startswith(self._prefix)
        segments = self._segments
        if len(segments) == 1:
            return _fits(segments[0], self._searchers[0], subject, 0, len(subject))
        first, last = segments[0], segments[-1]
        if len(first) + len(last) > len(subject):
            return False
        if not _fits(first, self._searchers[0], subject, 0, len(first)):
            return False
        end = len(subject) - len(last)
        if not _fits(last, self._searchers[-1], subject, end, len(subject)):
            return False
        position = len(first)
        for segment, searcher in zip(segments[1:-1], self._searchers[1:-1], strict=True):
            if not segment:
                continue
            found = _find(segment, searcher, subject, position, end)
            if found < 0:
                return False
            position = found + len(segment)
        return True


def _fits(
    segment: str, searcher: re.Pattern[str] | None, subject: str, start: int, end: int
) -> bool:
    """Whether ``subject[start:end]`` is exactly ``segment`` (``?`` matching any one char)."""
    if end - start != len(segment):
        return False
    if searcher is None:
        return subject.startswith(segment, start)
    return searcher.fullmatch(subject, start, end) is not None


def _find(
    segment: str, searcher: re.Pattern[str] | None, subject: str, start: int, end: int
) -> int:
    if searcher is None:
        return subject.find(segment, start, end)
    match = searcher.search(subject, start, end)
    return -1 if match is None else match.start()
