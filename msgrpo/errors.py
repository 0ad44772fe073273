"""Errors with messages meant for the user, printed in one line by the CLI."""

from __future__ import annotations

from typing import Any

_UNSET = object()


class ConfigError(ValueError):
    """A bad configuration value; the message names the value and how to fix it.

    Args:
        message: What is wrong and what is allowed (e.g. ``"size must be >= 2"``).
        setting: The constructor argument at fault (e.g. ``"size"``). The CLI names it by its full
            configuration key (``data.game.init_args.size``); raised from Python the owner's class name
            is enough context.
        value: The offending value, appended as ``", got <value>"``.
        owner: The class name of the component whose setting it is, leading the message as
            ``"<owner>: "`` (for checks that may run outside the owner's constructor, such as a sampler's
            :meth:`~msgrpo.components.samplers.EpisodeSampler.validate`). The CLI puts the configuration
            key in its place: :attr:`detail` is the message without it.
    """

    def __init__(self, message: str, setting: str | None = None, value: Any = _UNSET, owner: str | None = None) -> None:
        self.detail = message if value is _UNSET else f"{message}, got {value!r}"
        self.setting = setting
        self.owner = owner
        self.message = f"{owner}: {self.detail}" if owner else self.detail
        super().__init__(self.message)


def require(ok: bool, setting: str, requirement: str, value: Any, owner: str | None = None) -> None:
    """Raise :class:`ConfigError` ``"[<owner>: ]<setting> must be <requirement>, got <value>"`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{setting} must be {requirement}", setting=setting, value=value, owner=owner)
