"""Topic patterns and the router that picks one for a topic.

A pattern is a literal topic (``updates:all``), a topic with named captures (``room:{id}``,
``notifications:user_{uid}``), or either ending in ``*`` (``room:*``, any suffix, as in Phoenix).
A capture matches one or more characters other than ``:``, so it never spans a topic segment.

Precedence, most specific first: a literal pattern beats one with captures; then more literal
characters beat fewer; a trailing ``*`` comes after every pattern of the same literal length; ties
keep the order of declaration. So ``room:lobby`` wins over ``room:{id}``, which wins over ``room:*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Route", "Router", "TopicPattern"]

T = TypeVar("T")

_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BAD = re.compile(r"[{}]")


@dataclass(frozen=True)
class TopicPattern:
    """One compiled pattern; build it with :meth:`parse`."""

    source: str
    regex: re.Pattern[str]
    captures: tuple[str, ...]
    literal_chars: int
    wildcard: bool

    @classmethod
    def parse(cls, source: str) -> "TopicPattern":
        """Compile ``source``.

        Raises:
            ValueError: with a message that says what is wrong with the pattern.
        """
        if not source:
            raise ValueError("a topic pattern cannot be empty")
        wildcard = source.endswith("*")
        body = source[:-1] if wildcard else source
        if "*" in body:
            raise ValueError("'*' may only end a pattern, as in 'room:*'")
        regex, captures, literal, pos = ["^"], [], 0, 0
        for match in _CAPTURE.finditer(body):
            text = body[pos : match.start()]
            if _BAD.search(text):
                raise ValueError("a capture is written {name}, with a name of letters, digits and _")
            regex.append(re.escape(text))
            literal += len(text)
            name = match.group(1)
            if name in captures:
                raise ValueError(f"capture {{{name}}} appears twice")
            if name == "name":
                raise ValueError("capture {name} is reserved: topic.name is the whole topic")
            captures.append(name)
            regex.append(f"(?P<{name}>[^:]+)")
            pos = match.end()
        text = body[pos:]
        if _BAD.search(text):
            raise ValueError("a capture is written {name}, with a name of letters, digits and _")
        regex.append(re.escape(text))
        literal += len(text)
        regex.append(".*\\Z" if wildcard else "\\Z")  # \Z, not $ (which also matches before a final newline)
        return cls(source, re.compile("".join(regex), re.DOTALL), tuple(captures), literal, wildcard)

    @property
    def is_literal(self) -> bool:
        return not self.captures and not self.wildcard

    def match(self, topic: str) -> dict[str, str] | None:
        found = self.regex.match(topic)
        return None if found is None else found.groupdict()

    def sort_key(self) -> tuple[int, int, int]:
        return (0 if self.is_literal else 1, -self.literal_chars, 1 if self.wildcard else 0)


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """A topic matched to its pattern: the captures, and whatever the router was given for it."""

    topic: str
    pattern: TopicPattern
    captures: dict[str, str]
    target: T


@dataclass
class Router(Generic[T]):
    """Maps topics to targets through patterns, most specific first."""

    _entries: list[tuple[TopicPattern, T]] = field(default_factory=list)

    def add(self, pattern: TopicPattern | str, target: T) -> None:
        if isinstance(pattern, str):
            pattern = TopicPattern.parse(pattern)
        self._entries.append((pattern, target))
        # sort() is stable, so declaration order breaks ties.
        self._entries.sort(key=lambda entry: entry[0].sort_key())

    def match(self, topic: str) -> Route[T] | None:
        for pattern, target in self._entries:
            captures = pattern.match(topic)
            if captures is not None:
                return Route(topic, pattern, captures, target)
        return None

    def shadowed(self) -> list[tuple[TopicPattern, TopicPattern]]:
        """Pairs (earlier, later) where every topic of ``later`` also matches ``earlier``.

        Checked on the pattern's own text with each capture replaced by a sample value, which is
        exact for the pattern language above (captures are single segments, ``*`` only at the end).
        """
        found = []
        for i, (later, _) in enumerate(self._entries):
            sample = _CAPTURE.sub("x", later.source.rstrip("*"))
            probes = [sample, sample + "x:y"] if later.wildcard else [sample]
            for earlier, _ in self._entries[:i]:
                if all(earlier.match(p) is not None for p in probes) and earlier.source != later.source:
                    found.append((earlier, later))
                    break
        return found


