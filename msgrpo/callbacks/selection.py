"""Keep the best policy of a run, judged on validation seeds that no evaluation and no training uses.

An RL policy's quality does not rise monotonically: one update can undo what earlier ones learned, and the
run ends with whatever the last update left. :class:`BestPolicy` plays a small validation panel (the same
scenarios as the evaluation panel, other reset seeds) with the live policy every ``every_n_epochs``
iterations from ``start`` on, remembers the trainable weights that scored best, and puts them into the
model after the last iteration, before the final evaluation, so what ``fit`` ends with (and what
``last.ckpt`` then holds) is the selected policy. The evaluation panel's seeds are never played for the
selection, so the final evaluation stays an honest held-out measurement.

Training is untouched: rollouts and updates use the live weights (the importance ratio is 1 at every
iteration's first update); a validation between iterations does not move the training's random streams
(every iteration reseeds them). Only trainable parameters are kept (under LoRA the adapter), on the
parameters' device, and in checkpoints as callback state (without LoRA a second copy of the weights).

A run interrupted before its last iteration (``GracefulShutdown``, a crash) resumes exactly. The selection
happens only when the run reaches ``trainer.max_epochs``: a run stopped earlier (``max_time``, early stopping)
ends with its live policy. A finished run's ``last.ckpt`` holds the selected policy, so continuing it with a
larger ``max_epochs`` trains on from that policy (with the last iteration's optimizer state). Not for sharded
parameters (FSDP) yet: refused with an error.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from msgrpo.callbacks.averaging import (
    PolicyAveraging,
    at_iteration_end,
    check_start,
    trainable_parameters,
    window_start,
)
from msgrpo.errors import ConfigError, require
from msgrpo.evaluation import PANEL_SEED, Scenario, build_panel

VALIDATION_SEED = 2 * PANEL_SEED
"""First reset seed of the validation panel: above the evaluation panel's seeds, which start at
``PANEL_SEED``, and the training seeds, which are below it."""


class BestPolicy(L.Callback):
    """Select the policy of the iteration whose validation return was highest.

    Args:
        every_n_epochs: Validate after every this many iterations (and after the last one).
        start: The first validated iteration as a fraction of ``trainer.max_epochs`` in ``[0, 1)``
            (:func:`~msgrpo.callbacks.averaging.window_start`): with ``0.5`` of 200 iterations, the policies after
            iterations 100, 110, ..., 200 compete (1-based). Default 0: from the first iteration on, so
            the selection never misses a better policy that came early in the run.
        episodes: Validation episodes per scenario (greedy or sampled as the module evaluates).
        scenarios: The validation panel's scenario names (None: the data module's evaluation panel's).
        seed: First reset seed of the validation panel; its seeds must not overlap the evaluation panel's.
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        start: float = 0.0,
        episodes: int = 32,
        scenarios: list[str] | None = None,
        seed: int = VALIDATION_SEED,
    ) -> None:
        name = type(self).__name__
        every_ok = isinstance(every_n_epochs, int) and every_n_epochs >= 1
        require(every_ok, "every_n_epochs", ">= 1", every_n_epochs, owner=name)
        check_start(start, name)
        require(isinstance(episodes, int) and episodes >= 1, "episodes", ">= 1", episodes, owner=name)
        self.every_n_epochs, self.start, self.episodes = every_n_epochs, float(start), episodes
        self.scenarios, self.seed = scenarios, seed
        self.panel: list[Scenario] = []
        self.scored_epoch = -1  # the last iteration (0-based) whose policy was validated
        self.best_epoch = -1
        self.best_score = -math.inf
        self.best: dict[str, torch.Tensor] = {}  # name -> [*param shape], the best policy's trainable weights
        self.scores: list[tuple[int, float]] = []  # (iteration, 1-based; validation mean return)

    # ----- selection -----------------------------------------------------------------------------
    def first_epoch(self, trainer: L.Trainer) -> int:
        """The first validated iteration (0-based)."""
        return window_start(trainer, self.start, "BestPolicy")

    def due(self, trainer: L.Trainer, epoch: int) -> bool:
        """Whether the policy after iteration ``epoch`` (0-based) is validated."""
        if epoch < self.first_epoch(trainer) or epoch <= self.scored_epoch:
            return False
        return (epoch + 1) % self.every_n_epochs == 0 or epoch == trainer.max_epochs - 1

    def score(self, pl_module: L.LightningModule) -> float:
        """The live policy's mean return over the validation panel (the mean of the scenarios' means)."""
        means = [pl_module.evaluate(scenario)["return_mean"] for scenario in self.panel]
        return sum(means) / len(means)

    def _validate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Score the policy of the iteration just finished (once), keep it if best, and at the last
        iteration put the best into the model."""
        epoch = trainer.current_epoch
        if not self.due(trainer, epoch):
            return
        score = self.score(pl_module)
        self.scored_epoch = epoch
        self.scores.append((epoch + 1, score))
        if score > self.best_score:  # ties keep the earlier policy; NaN is never best
            self.best_score, self.best_epoch = score, epoch
            self.best = {n: p.detach().clone() for n, p in trainable_parameters(pl_module).items()}
        pl_module.log("select/score", score, reduce_fx="max")  # (the same on every rank: gathered)
        pl_module.log("select/best_iteration", float(self.best_epoch + 1), reduce_fx="max")
        if epoch == trainer.max_epochs - 1 and self.best_epoch not in (-1, epoch):
            with torch.no_grad():
                for name, param in trainable_parameters(pl_module).items():
                    param.copy_(self.best[name])  # (from a checkpoint: CPU tensors)
            pl_module.policy.weights_changed()
            if trainer.is_global_zero:
                print(
                    f"msgrpo: BestPolicy: the policy after iteration {self.best_epoch + 1} scored best on the "
                    f"validation seeds ({self.best_score:+.3f} mean return; the last one {score:+.3f}): "
                    "it is the one fit ends with",
                    flush=True,
                )

    # ----- hooks ---------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_epoch(trainer)  # fail at once on a run without max_epochs
        if any(isinstance(c, PolicyAveraging) for c in trainer.callbacks):
            raise ConfigError(
                "BestPolicy and PolicyAveraging both choose the weights fit ends with: use one of them (the Snake "
                "recipe lists BestPolicy: a config overlay with its own trainer.callbacks list leaves it out)",
                setting="trainer.callbacks",
            )
        if getattr(getattr(pl_module, "sharding", None), "sharded", False):
            raise ConfigError(
                "BestPolicy does not support sharded parameters (FSDP) yet: its copy of the best weights would "
                "hold one rank's shards; use it with a single device or DDP (the Snake recipe lists it: a config "
                "overlay with its own trainer.callbacks list leaves it out)",
                setting="trainer.strategy",
            )
        data = trainer.datamodule
        if data is None or not hasattr(data, "game"):
            raise ConfigError("BestPolicy needs msgrpo's RolloutDataModule (it validates on its game)")
        names = self.scenarios if self.scenarios is not None else [s.name for s in data.panel]
        used = {seed for panel in (data.panel, data.reference_panel) for s in panel for seed in s.seeds}
        self.panel = build_panel(data.game, names, self.episodes, self.seed)
        overlap = used & {seed for s in self.panel for seed in s.seeds}
        if overlap:
            raise ConfigError(
                f"the validation seeds overlap the evaluation panel's ({len(overlap)} shared, e.g. {min(overlap)}): "
                f"selecting on them would make the final evaluation no longer held out; pick a seed at least "
                f"{max(used) + 1}",
                setting="seed",
                value=self.seed,
                owner=type(self).__name__,
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validate(trainer, pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning evaluates at an iteration's end before on_train_epoch_end: select first, so the last
        # iteration's evaluation sees the selected policy
        # (only at an iteration's end: an evaluation inside it, val_check_interval < 1, sees a half-updated policy)
        if trainer.state.fn == "fit" and not trainer.sanity_checking and at_iteration_end(trainer):
            self._validate(trainer, pl_module)

    # ----- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "scored_epoch": self.scored_epoch,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "best": {n: t.cpu() for n, t in self.best.items()},
            "scores": list(self.scores),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scored_epoch = state_dict["scored_epoch"]
        self.best_epoch = state_dict["best_epoch"]
        self.best_score = state_dict["best_score"]
        self.best = dict(state_dict["best"])
        self.scores = [tuple(s) for s in state_dict["scores"]]
