"""HTTP Range requests (RFC 9110), the single-range subset downloaders use."""

from __future__ import annotations

import re

UNSATISFIABLE = "unsatisfiable"
_SPEC = re.compile(r"bytes=(\d*)-(\d*)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte to send, UNSATISFIABLE, or None to send the whole body.

    A header that does not parse is ignored, as the RFC asks (old SDKs send ``bytes=0--1`` for empty files).
    """
    match = _SPEC.fullmatch((header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        count = int(last)
        return (max(size - count, 0), size - 1) if count and size else UNSATISFIABLE
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    return start, min(int(last) if last else size - 1, size - 1)
