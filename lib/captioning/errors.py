"""The one line between errors a user can fix and bugs.

Every expected failure (a wrong URI, a missing or mismatched artifact, denied access, bad
input) is raised as a subclass of :class:`UserError` whose message names the object and
what to do; a command prints that message as one ``error:`` line and exits with status 2.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; the message is one line naming the object and the remedy."""


class InputError(UserError, ValueError):
    """An option, input or artifact that cannot be used as given."""


class ConfigError(UserError, ValueError):
    """A stored configuration (JSON) that does not describe the expected settings."""
