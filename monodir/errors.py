"""Exceptions shared by every layer.

``InputError`` is raised for anything the user can fix (bad file, bad config, impossible
parameters). The CLI prints its message on one line and exits with status 2.
"""

from __future__ import annotations


class MonodirError(Exception):
    """Base class of monodir's own errors."""


class InputError(MonodirError, ValueError):
    """Bad input that the user can fix; the message names the problem and the fix."""

    exit_code = 2
