"""The one exception type for mistakes a user can make.

Every error a user can cause (missing or corrupt file, bad option value, wrong shape,
NaN loss) is raised as :class:`InterplabError` with one clear sentence. The command line
prints that sentence on stderr and exits with code 2, without a traceback.

Example:
    >>> from interplab.errors import InterplabError
    >>> try:
    ...     raise InterplabError("The run directory runs/x does not exist.")
    ... except InterplabError as e:
    ...     print(e)
    The run directory runs/x does not exist.
"""

from __future__ import annotations


class InterplabError(Exception):
    """A user-caused error whose message is one sentence meant for a person."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`InterplabError` with ``message`` unless ``condition`` holds.

    Example:
        >>> check(2 > 1, "never shown")
        >>> check(False, "p must be a prime.")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: p must be a prime.
    """
    if not condition:
        raise InterplabError(message)
