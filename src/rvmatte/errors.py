"""Errors a user can act on.

Anything raised as :class:`RvmatteError` is reported by the CLI as one line
(``rvmatte: error: <message>``) with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name if it has none."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class RvmatteError(Exception):
    """A problem with the user's input, options or environment (not a bug)."""

    exit_code = 2


class InputError(RvmatteError):
    """The input is missing, unreadable or not something we can process."""


class OutputError(RvmatteError):
    """The output cannot be written (exists, unwritable, disk full, same as input...)."""


class WeightsError(RvmatteError):
    """A weights file is missing, corrupt or does not match the model."""


class Cancelled(RvmatteError):
    """A job was cancelled by its caller (e.g. the web server's DELETE)."""

    exit_code = 130
