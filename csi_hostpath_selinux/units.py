"""Byte quantities written the Kubernetes way: 1073741824, 10Gi, 500M."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
_QUANTITY = re.compile(r"\s*(\d{1,20})\s*([kmgt]i?)?\s*", re.IGNORECASE | re.ASCII)


def parse_size(text: str) -> int:
    """The number of bytes text names; ValueError when it is not a size."""
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a size such as 1073741824, 10Gi or 500M")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
