"""Progress bars, one helper for every long pass: one bar at a time, in a terminal or a
notebook, none in a log.

:func:`progress_bar` is tqdm's bar, disabled when the caller turns it off
(``progress=False``), when standard error is not a terminal (a log file, a pipe, a job
scheduler; a notebook is the exception: it shows its bar), and while another bar is open
(a pass inside a pass, e.g. the feature pass of a seed inside a summary's bar): a cell
or a terminal shows one bar, which goes when its pass is done (``leave=False``).
"""
from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable
from typing import Any

__all__ = ["in_notebook", "progress_bar", "showing"]

#: bars shown (a bar closed, or collected, is no longer open: tqdm's close disables it)
_shown: weakref.WeakSet = weakref.WeakSet()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (an IPython shell with a kernel)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - an IPython without a shell
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:                   # a closed stream
        return False


def showing(enabled: bool = True) -> bool:
    """Whether a bar asked for now (``enabled``) would be shown: in a notebook or on a
    terminal's standard error, and no other bar open."""
    return bool(enabled) and not any(not bar.disable for bar in list(_shown)) and (
        in_notebook() or _terminal())


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str | None = None, unit: str = "it", enabled: bool = True,
                 **options: Any) -> Any:
    """A tqdm bar over ``iterable`` (or one to ``update`` by hand up to ``total``), shown
    only when :func:`showing` says so (else a disabled bar: it iterates and counts, and
    prints nothing). It leaves nothing behind once closed; ``options`` go to tqdm."""
    import tqdm.auto
    import tqdm.std
    make: Any = tqdm.std.tqdm
    if in_notebook():
        make = tqdm.auto.tqdm                    # the notebook's widget, when it has one
        options.setdefault("mininterval", 0.5)
    show = showing(enabled)
    options.setdefault("leave", False)
    options.setdefault("dynamic_ncols", True)
    bar = make(iterable, total=total, desc=desc, unit=unit, disable=not show, **options)
    if show:
        _shown.add(bar)
    return bar
