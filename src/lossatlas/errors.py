"""The one exception type lossatlas raises for user mistakes."""

from __future__ import annotations


class LossatlasError(ValueError):
    """A user mistake (bad input, a mismatched direction, a bad file).

    The message is one line that says what is wrong and, where it helps, what to do. The command
    line prints it without a traceback and exits with status 2.
    """
