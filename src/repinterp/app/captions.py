"""Captions that tell images apart: the distinctive part of each name among the names
shown together (a card's members, a region page's grid)."""
from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["CAPTION_WIDTH", "captions"]

#: Characters on one line of a caption under a :data:`~repinterp.app.thumbs.THUMBNAIL`
#: tile (11 px type); a caption takes at most two lines where it can.
CAPTION_WIDTH = 16
_SEPARATORS = "/\\_-. "
_CUT = "\u2026"


def _shared_start(names: Sequence[str]) -> str:
    """The start the distinct ``names`` share, up to its last separator (so that no word
    or number is split: ``photo_everyday_00`` gives ``photo_everyday_``); empty for fewer
    than two names, or when it would leave a name with nothing."""
    distinct = sorted(set(names))
    if len(distinct) < 2:
        return ""
    start = os.path.commonprefix(distinct)
    start = start[:max(start.rfind(c) for c in _SEPARATORS) + 1]
    return start if all(len(n) > len(start) for n in distinct) else ""


def captions(names: Sequence[str], width: int = CAPTION_WIDTH, lines: int = 2
             ) -> list[str]:
    """A caption for each of ``names`` (shown together), on at most ``lines`` lines of
    ``width`` characters where the part that tells them apart allows: a name that fits
    one line as it is; else the name without the start all of them share (``…008.jpg``
    for ``photo_everyday_008.jpg`` among ``photo_everyday_*.jpg``), whole, on more
    lines if need be; a name alone, its end. A caption is only ever cut at its start,
    never at both ends (its end, where numbered files differ, always shows), and
    distinct names get distinct captions."""
    names = [str(n) for n in names]
    start = _shared_start(names)
    room = width * lines
    alone = len(set(names)) < 2                 # nothing to tell apart: any end will do

    def long_form(name: str) -> str:
        return _CUT + name[len(start):] if start else name

    out = []
    for name in names:
        caption = long_form(name)
        if len(name) <= width:
            caption = name
        elif alone and len(caption) > room:
            caption = _CUT + name[-(room - 1):]
        out.append(caption)
    return out
