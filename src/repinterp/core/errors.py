"""Exceptions that carry a message meant for the user."""
from __future__ import annotations

from collections.abc import Mapping

__all__ = ["NotFittedError", "UserError", "first_line"]


class UserError(ValueError):
    """Bad input or usage: the CLI prints the message on one line and exits with 2.

    ``param`` names the parameter the error concerns; where the message names it, it
    writes ``{param}``, shown as ``api`` (the library's spelling, default ``param``
    itself) by ``str(error)`` and as the command line's flag by :meth:`render` with the
    CLI's table of flags. A message about several parameters writes ``{name}`` for each
    name of ``params`` (name -> the library's spelling). No text is rewritten: an error
    without parameters reads the same everywhere.
    """

    def __init__(self, message: str, param: str | None = None, api: str | None = None, *,
                 params: Mapping[str, str] | None = None):
        self.template = message
        self.param = param
        self.params = dict(params or {})
        if param is not None:
            self.params = {param: api or param, **self.params}
        super().__init__(self.render())

    def render(self, spellings: Mapping[str, str] | None = None) -> str:
        """The message with each parameter spelled as ``spellings`` has it (the
        library's spelling where ``spellings`` has none)."""
        text = self.template
        for i, (name, api) in enumerate(self.params.items()):
            word = (spellings or {}).get(name, api)
            text = text.replace("{" + name + "}", word)
            if i == 0:
                text = text.replace("{param}", word)
        return text


class NotFittedError(UserError, AttributeError):
    """A method that needs :meth:`fit` was called before it (as scikit-learn's
    ``NotFittedError``: both a ``ValueError`` and an ``AttributeError``)."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type's name)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # TorchScript puts a generic line first and the real error last
    return lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
