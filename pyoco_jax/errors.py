"""Errors a user can fix by changing a config value, a flag or a file: the CLIs print them as one line.

Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A mistake in what the user gave (config, flags, paths, files); the message says what to change."""


class ConfigError(UserError):
    """A config value the user must change; the message names the key."""
