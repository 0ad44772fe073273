"""Errors with messages meant for the user, printed in one line by the CLI."""


class ConfigError(ValueError):
    """A bad configuration value; the message names the value and how to fix it."""
