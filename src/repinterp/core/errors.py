"""Exceptions that carry a message meant for the user."""
from __future__ import annotations

__all__ = ["NotFittedError", "NotPiecewiseLinearError", "UserError", "first_line"]


class UserError(ValueError):
    """Bad input or usage: the CLI prints the message on one line and exits with 2."""


class NotFittedError(UserError, AttributeError):
    """A method that needs :meth:`fit` was called before it (as scikit-learn's
    ``NotFittedError``: both a ``ValueError`` and an ``AttributeError``)."""


class NotPiecewiseLinearError(UserError):
    """The head after the chosen layer is not piecewise linear. No longer raised (smooth
    heads get tangent boundaries since 0.5); kept so that code catching it still runs."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type's name)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # TorchScript puts a generic line first and the real error last
    return lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
