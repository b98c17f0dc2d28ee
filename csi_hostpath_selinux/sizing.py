"""Volume sizes from a CSI capacity range: one rule for CreateVolume, ControllerExpandVolume and
NodeExpandVolume (a node-local driver's node can do the controller's part of an expansion)."""

from __future__ import annotations

from .errors import InvalidArgument, OutOfRange

MIB = 1024 * 1024


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def check_range(required: int, limit: int) -> None:
    """Refuse a capacity range no size can satisfy."""
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range bytes must not be negative")
    if limit and required > limit:
        raise InvalidArgument(
            f"capacity_range required_bytes {required} is larger than limit_bytes {limit}"
        )


def choose_size(required: int, limit: int, default: int, minimum: int, largest: int) -> int:
    """The size for a capacity range: required (or default when 0), at most limit, rounded up to
    MiB and at least minimum (the filesystem's); OutOfRange when that exceeds limit or largest."""
    check_range(required, limit)
    size = required or default
    if limit and size > limit:
        size = limit
    size = max(round_up(size, MIB), round_up(minimum, MIB))
    if limit and size > limit:
        raise OutOfRange(
            f"the volume needs at least {size} bytes (the filesystem's minimum, rounded to "
            f"MiB), more than limit_bytes {limit}"
        )
    if size > largest:
        raise OutOfRange(f"{size} bytes is more than this driver's largest volume, {largest} bytes")
    return size
