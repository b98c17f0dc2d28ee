"""The one splitter of comma-joined mount options: commas inside double quotes do not split.

An MCS level contains a comma (``s0:c15,c25``), so kubelet sends ``context="<label>"`` double-quoted,
and an option string is split only on the commas outside quotes. Two entry points share one scan:

- ``split_outside_quotes`` for what a user wrote (mount flags, a StorageClass's mountOptions):
  empty pieces are kept, so the caller can refuse them, and an unbalanced double quote raises
  ValueError, because nothing tells where the quoted value was meant to end.
- ``split_kernel_options`` for what the kernel printed (mountinfo's option fields) or what the driver
  itself already checked: empty pieces are dropped and an unbalanced quote runs to the end.
"""

from __future__ import annotations

UNBALANCED_QUOTE = "it has an unbalanced double quote"


def _piece_spans(text: str, sep: str, strict: bool) -> list[tuple[int, int]]:
    """Start and end of each sep-separated piece of text, ignoring seps inside "quotes"."""
    spans: list[tuple[int, int]] = []
    start = 0
    quoted = False
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            spans.append((start, index))
            start = index + 1
    if quoted and strict:
        raise ValueError(UNBALANCED_QUOTE)
    spans.append((start, len(text)))
    return spans


def piece_spans(text: str) -> list[tuple[int, int]]:
    """Start and end of each comma-separated piece of user-written text; ValueError on an
    unbalanced double quote."""
    return _piece_spans(text, ",", strict=True)


def split_outside_quotes(text: str, sep: str = ",") -> list[str]:
    """Split user-written options on the seps outside double quotes, keeping empty pieces.

    Raises ValueError (``UNBALANCED_QUOTE``) when a double quote is never closed."""
    return [text[start:end] for start, end in _piece_spans(text, sep, strict=True)]


def split_kernel_options(text: str, sep: str = ",") -> list[str]:
    """Split options the kernel printed (or the driver already checked) on the seps outside double
    quotes; empty pieces are dropped and an unclosed quote runs to the end of the text."""
    return [text[start:end] for start, end in _piece_spans(text, sep, strict=False) if end > start]
