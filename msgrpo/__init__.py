"""msgrpo: MS-GRPO post-training of LLM agents on PyTorch Lightning.

The public API is importable from here (``from msgrpo import MSGRPOModule``); names are resolved lazily so
that light entry points (``python -m msgrpo.baselines``) do not pay for importing Lightning.
"""

from __future__ import annotations

import importlib

_LOCATIONS = {
    "TextGame": "msgrpo.game",
    "TagParser": "msgrpo.game",
    "ActionParser": "msgrpo.game",
    "LanguagePolicy": "msgrpo.policy",
    "LoraSettings": "msgrpo.policy",
    "play": "msgrpo.rollout",
    "MSGRPOLoss": "msgrpo.loss",
    "MSGRPOModule": "msgrpo.module",
    "RolloutDataModule": "msgrpo.data",
    "MSGRPOCLI": "msgrpo.cli",
    "PolicyAveraging": "msgrpo.averaging",
    "CreditAssigner": "msgrpo.components.credit",
    "EpisodeReturn": "msgrpo.components.credit",
    "EpisodeSampler": "msgrpo.components.samplers",
    "AbsoluteAdvantageWeighted": "msgrpo.components.samplers",
    "FrozenLake": "msgrpo.components.games",
    "Snake": "msgrpo.components.games",
    "Episode": "msgrpo.types",
    "Step": "msgrpo.types",
    "StepSample": "msgrpo.types",
}

__all__ = sorted(_LOCATIONS)

GYM_ENVS = {
    "msgrpo/Snake-v0": "msgrpo.components.games.snake:SnakeEnv",
    "msgrpo/FrozenLake-v0": "msgrpo.components.games.frozen_lake:RandomMapFrozenLake",
}
"""The gymnasium ids this package registers when imported (entry points are strings: nothing heavy loads)."""


def _register_envs() -> None:
    # gymnasium 1.x has no entry-point plugin discovery, so `import msgrpo` is what makes
    # `gymnasium.make("msgrpo/Snake-v0")` work
    from gymnasium.envs.registration import register, registry

    for env_id, entry_point in GYM_ENVS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point)


_register_envs()


def __getattr__(name: str):
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'msgrpo' has no attribute {name!r}")
