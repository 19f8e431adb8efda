"""Counts in words, for messages and reports."""
from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 boundary"``, ``"3 boundaries"``: ``n`` and ``word``, or its plural ``many``
    (default: ``word`` + ``s``, ``-y`` -> ``-ies``). Thousands are separated."""
    if n == 1:
        return f"1 {word}"
    if many is None:
        many = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" \
            else word + "s"
    return f"{n:,} {many}"
