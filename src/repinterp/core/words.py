"""Counts and names in words, for messages and reports."""
from __future__ import annotations

__all__ = ["at_most", "layer_words", "plural"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 boundary"``, ``"3 boundaries"``: ``n`` and ``word``, or its plural ``many``
    (default: ``word`` + ``s``, ``-y`` -> ``-ies``). Thousands are separated."""
    if n == 1:
        return f"1 {word}"
    if many is None:
        many = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" \
            else word + "s"
    return f"{n:,} {many}"


def at_most(n: int, word: str, many: str | None = None) -> str:
    """``"no image"``, ``"at most 1 image"``, ``"at most 4 images"``: a limit in words
    (``word``'s plural as :func:`plural` makes it)."""
    return f"no {word}" if n == 0 else f"at most {plural(n, word, many)}"


def layer_words(layer: str) -> str:
    """A layer named in a sentence: ``"layer4.0"`` as it is, ``"features"`` or ``"2"``
    after the word: ``"layer features"``, ``"layer 2"`` (never ``"layer layer4.0"``)."""
    return layer if layer.lower().startswith("layer") else f"layer {layer}"
