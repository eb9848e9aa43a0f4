"""Exceptions raised by the engine.

Every error a user can cause is an :class:`InputError` whose message names the file, the row or column
and what to do about it. The CLI turns it into one line on stderr and exit code 2; the app shows it as a
message. Error message templates are module-level constants next to the code that raises them, and tests
compare against them exactly.
"""
from __future__ import annotations


class AuditError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(AuditError):
    """Bad user input: a file, row, column or value that cannot be used.

    Parameters
    ----------
    message : str
        The complete, user-facing message (already naming file/row/column and the fix).
    source : str, optional
        The file the problem is in.
    row : int, optional
        0-based data row in ``source`` (header excluded), when the problem is one row.
    column : str, optional
        The column the problem is in.
    """

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 column: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.row = row
        self.column = column

    def __str__(self) -> str:
        return self.message


class ModelError(InputError):
    """A model file that cannot be loaded or whose output does not fit the data set."""


class PolicyError(InputError):
    """A policy file with an unknown key, a wrong type or an impossible value."""
