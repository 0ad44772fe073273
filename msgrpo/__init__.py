"""msgrpo: MS-GRPO post-training of LLM agents on PyTorch Lightning.

The public API is importable from here (``from msgrpo import MSGRPOModule``); names are resolved lazily so
that light entry points (``python -m msgrpo.tools.baselines``) do not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

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
    "PolicyAveraging": "msgrpo.callbacks.averaging",
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

# ----- old module paths (0.1.0), kept for one release --------------------------------------------------------
MOVED = {
    **{f"msgrpo.{name}": f"msgrpo.lm.{name}"
       for name in ("loading", "models", "pretrained", "decoding", "distribution", "prefix", "trunk")},
    **{f"msgrpo.{name}": f"msgrpo.callbacks.{name}" for name in ("selection", "averaging", "progress", "summary")},
    **{f"msgrpo.{name}": f"msgrpo.observe.{name}" for name in ("transcripts", "frames", "views")},
    **{f"msgrpo.{name}": f"msgrpo.tools.{name}" for name in ("baselines", "report", "ablate", "export", "replay")},
    "msgrpo.plot": "msgrpo.tools.plot",
}  # fmt: skip
"""Old module path -> new one: ``import msgrpo.selection``, a YAML ``class_path: msgrpo.selection.BestPolicy``
and ``python -m msgrpo.replay`` keep working, with a FutureWarning naming the new path."""


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and hands out the module at its new one (the same module object, so classes
    stay identical); ``python -m`` on an old path runs the new module's code."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}: the old path works until the next release", FutureWarning,
                      stacklevel=2)  # fmt: skip
        module = importlib.import_module(new)
        self._specs = {**getattr(self, "_specs", {}), spec.name: module.__spec__}
        return module

    def exec_module(self, module) -> None:
        """Nothing to run (the module is the new path's, already imported); put back its own ``__spec__``,
        which importing it under the old name replaced."""
        module.__spec__ = self._specs[module.__spec__.name]

    def get_code(self, fullname):  # ``python -m <old path>``: the new module's code
        new = MOVED[fullname]
        warnings.warn(f"python -m {fullname} moved to python -m {new}: the old path works until the next release",
                      FutureWarning, stacklevel=2)  # fmt: skip
        return importlib.util.find_spec(new).loader.get_code(new)


sys.meta_path.append(_MovedModules())


def __getattr__(name: str):
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'msgrpo' has no attribute {name!r}")
