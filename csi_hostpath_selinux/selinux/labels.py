"""SELinux label grammar: parse and validate ``user:role:type:level``, and compare labels the way
the kernel does.

Labels are compared in the kernel's canonical form (``canonical()``): the kernel prints
``s0:c0,c1,c2`` back as ``s0:c0.c2``, so comparing the text kubelet sent with what mountinfo shows
would report a correct mount as wrong. A label must have four fields: kubelet only sends a context
when the pod gives at least ``seLinuxOptions.level``, so a three-field label never comes from
kubelet; it is refused rather than guessed at. The type of a label is never assumed:
``container_file_t`` (Fedora, RHEL), ``svirt_lxc_file_t`` (Debian, Ubuntu) and any custom type are
handled alike.

Pure logic: no I/O, no import outside the standard library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The names refpolicy and container-selinux define: sensitivities s0..s15, categories c0..c1023.
MAX_SENSITIVITY = 15
MAX_CATEGORY = 1023

# SELinux user, role and type names as checkpolicy accepts them: ASCII, a letter first, then
# letters, digits, '_' and '-', with single dots between parts (CIL namespaces use dots).
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")
_NOT_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_.:,-]")
_SENSITIVITY = re.compile(r"s(0|[1-9][0-9]*)")
_CATEGORY_ITEM = re.compile(r"c(0|[1-9][0-9]*)(?:\.c(0|[1-9][0-9]*))?")


@dataclass(frozen=True)
class Level:
    """One MLS level: a sensitivity (s0..s15) and a set of categories (c0..c1023)."""

    sensitivity: int
    categories: frozenset[int]

    def dominates(self, other: Level) -> bool:
        return self.sensitivity >= other.sensitivity and self.categories >= other.categories

    def canonical(self) -> str:
        if not self.categories:
            return f"s{self.sensitivity}"
        return f"s{self.sensitivity}:{_format_categories(self.categories)}"


def _format_categories(categories: frozenset[int]) -> str:
    """Categories the way the kernel prints them: runs of three or more as cA.cB, others listed."""
    parts: list[str] = []
    ordered = sorted(categories)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[start], ordered[end]
        if end - start >= 2:
            parts.append(f"c{first}.c{last}")
        else:
            parts.extend(f"c{n}" for n in ordered[start : end + 1])
        start = end + 1
    return ",".join(parts)


def _parse_single_level(text: str) -> Level:
    sens_text, colon, cats_text = text.partition(":")
    match = _SENSITIVITY.fullmatch(sens_text)
    if match is None:
        raise ValueError(f"sensitivity {sens_text!r} is not of the form s0..s{MAX_SENSITIVITY}")
    sensitivity = int(match.group(1))
    if sensitivity > MAX_SENSITIVITY:
        raise ValueError(f"sensitivity {sens_text} is above s{MAX_SENSITIVITY}")
    categories: set[int] = set()
    if colon:
        if not cats_text:
            raise ValueError(f"level {text!r} has ':' but no categories after it")
        for item in cats_text.split(","):
            cat = _CATEGORY_ITEM.fullmatch(item)
            if not item:
                raise ValueError(f"level {text!r} has an empty category")
            if cat is None:
                raise ValueError(
                    f"category {item!r} is not of the form cN or cN.cM (N, M from 0 to "
                    f"{MAX_CATEGORY})"
                )
            low = int(cat.group(1))
            high = int(cat.group(2)) if cat.group(2) is not None else low
            for number in (low, high):
                if number > MAX_CATEGORY:
                    raise ValueError(f"category c{number} is above c{MAX_CATEGORY}")
            if cat.group(2) is not None and low >= high:
                raise ValueError(f"category range {item} does not go upwards (c{low} >= c{high})")
            categories.update(range(low, high + 1))
    return Level(sensitivity, frozenset(categories))


def parse_level(text: str) -> tuple[Level, Level]:
    """An MLS level or range (``low[-high]``); raises ValueError unless high dominates low."""
    if not text:
        raise ValueError("the MLS level is empty")
    low_text, dash, high_text = text.partition("-")
    if dash and not high_text:
        raise ValueError(f"MLS range {text!r} has no high level after '-'")
    low = _parse_single_level(low_text)
    high = _parse_single_level(high_text) if dash else low
    if not high.dominates(low):
        raise ValueError(
            f"MLS range {text!r}: the high level {high_text} does not dominate the low level "
            f"{low_text} (its sensitivity and categories must include the low level's)"
        )
    return low, high


@dataclass(frozen=True)
class SELinuxLabel:
    """A validated SELinux label, ``user:role:type:level``, kept exactly as it was written."""

    user: str
    role: str
    type: str
    level: str

    @classmethod
    def parse(cls, text: str) -> SELinuxLabel:
        """Parse and validate a label; ValueError says what is wrong in plain words."""
        if not text:
            raise ValueError("the label is empty")
        if not text.isascii() or not text.isprintable():
            raise ValueError(f"the label {text!a} holds characters outside printable ASCII")
        if any(ch.isspace() for ch in text):
            raise ValueError(f"the label {text!r} contains whitespace")
        bad = sorted(set(_NOT_LABEL_CHARS.findall(text)))
        if bad:
            raise ValueError(
                f"the label {text!r} contains {' '.join(bad)}: a label holds only letters, "
                "digits and _ . - : ,"
            )
        fields = text.split(":", 3)
        if len(fields) < 4:
            raise ValueError(
                f"the label {text!r} has {len(fields)} field(s); a label is user:role:type:level, "
                "for example system_u:object_r:container_file_t:s0:c1,c2 (kubelet always sends "
                "a level)"
            )
        user, role, type_, level = fields
        for what, value in (("user", user), ("role", role), ("type", type_)):
            if not _IDENTIFIER.fullmatch(value):
                raise ValueError(
                    f"the SELinux {what} {value!r} in {text!r} is not a valid name (a letter, "
                    "then letters, digits, '_', '-', or single dots)"
                    if value
                    else f"the SELinux {what} in {text!r} is empty"
                )
        try:
            parse_level(level)
        except ValueError as exc:
            raise ValueError(f"the MLS level {level!r} in {text!r} is invalid: {exc}") from None
        return cls(user, role, type_, level)

    def __str__(self) -> str:
        return f"{self.user}:{self.role}:{self.type}:{self.level}"

    def canonical(self) -> str:
        """The label as the kernel prints it back (mountinfo, xattrs): categories sorted, runs of
        three or more as cA.cB, and a range whose ends are equal as one level."""
        low, high = parse_level(self.level)
        level = low.canonical() if low == high else f"{low.canonical()}-{high.canonical()}"
        return f"{self.user}:{self.role}:{self.type}:{level}"


def same_label(a: str | None, b: str | None) -> bool:
    """Whether two labels (or two absences of one) mean the same thing to the kernel."""
    if a is None or b is None:
        return a is b
    return canonical_or_raw(a) == canonical_or_raw(b)


def canonical_or_raw(text: str) -> str:
    """text in the kernel's canonical form, or text unchanged when it is not a valid label."""
    try:
        return SELinuxLabel.parse(text).canonical()
    except ValueError:
        return text


_LABEL_FIELDS = ("user", "role", "type", "level")


def label_difference(a: str, b: str) -> list[tuple[str, str, str]]:
    """The fields in which two labels differ, as (field, in a, in b); levels compared in the
    kernel's canonical form. [] when they are the same or one of them is not a valid label."""
    try:
        first, second = SELinuxLabel.parse(a), SELinuxLabel.parse(b)
    except ValueError:
        return []
    found = []
    for name in _LABEL_FIELDS:
        mine, theirs = getattr(first, name), getattr(second, name)
        if name == "level":
            low_a, high_a = parse_level(mine)
            low_b, high_b = parse_level(theirs)
            if (low_a, high_a) == (low_b, high_b):
                continue
        elif mine == theirs:
            continue
        found.append((name, mine, theirs))
    return found
