"""Exceptions that carry a message meant for the user."""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input or usage: the CLI prints the message on one line and exits with 2."""
