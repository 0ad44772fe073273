"""Policy weight averaging over the last iterations (stochastic weight averaging of the trainable weights).

Late in training, with a small learning rate, an RL policy's weights take a random walk around a good
point: each iteration's few dozen episodes pull them a little one way or another, and the policy the run
ends with is one sample of that walk. :class:`PolicyAveraging` keeps the equal-weight mean of the policy's
trainable weights at the end of every iteration from ``start`` on (SWA, Izmailov et al. 2018). Training is
untouched: rollouts and updates use the live weights, so the importance ratio is still 1 at every
iteration's first update. Evaluations during ``fit`` swap the average in and back out (exactly: copies, no
arithmetic on the live weights), training ends with the average in the model, and checkpoints hold the
average under ``state_dict`` (what replay, export and ``test`` load) and the live weights beside it, so
``fit --ckpt_path last`` resumes the run exactly.

Only trainable parameters are averaged (under LoRA the adapter: a few MB, not a copy of the base model).
Unlike Lightning's ``WeightAveraging`` callbacks, which copy the whole LightningModule, this works with
LoRA and keeps the checkpoint's adapter-only format.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from msgrpo.errors import ConfigError, require

LIVE_KEY = "msgrpo_live_weights"


def trainable_parameters(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters an optimizer updates (under LoRA the adapter only), by name."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def require_max_epochs(trainer: L.Trainer, owner: str) -> int:
    """``trainer.max_epochs``, or a :class:`ConfigError` naming ``owner`` when the run has none.

    Callbacks whose schedule is a fraction of the run's iterations need it.
    """
    if trainer.max_epochs is None or trainer.max_epochs < 1:
        raise ConfigError(
            f"{owner} needs trainer.max_epochs (its start is a fraction of the run's iterations)",
            setting="trainer.max_epochs",
            value=trainer.max_epochs,
        )
    return trainer.max_epochs


def check_start(start: float, owner: str) -> None:
    """Raise :class:`ConfigError` naming ``owner`` unless ``start`` is a fraction of the run in ``[0, 1)``."""
    require(isinstance(start, (int, float)) and 0.0 <= start < 1.0, "start", "a fraction in [0, 1)", start, owner=owner)


def window_start(trainer: L.Trainer, start: float, owner: str) -> int:
    """The first iteration (0-based) whose end-of-iteration policy a callback with a ``start`` fraction
    counts: the first after which at least ``start`` of the run's iterations are done,
    ``ceil(start * max_epochs) - 1`` (at least 0). With ``start = 0.5`` of 200 iterations: the policy after
    iteration 100 (1-based). The one convention of :class:`PolicyAveraging` and
    :class:`~msgrpo.callbacks.selection.BestPolicy`."""
    return max(math.ceil(start * require_max_epochs(trainer, owner)) - 1, 0)


def at_iteration_end(trainer: L.Trainer) -> bool:
    """Whether the training loop stands at the end of an iteration (its last mini-batch done): an evaluation
    there sees the iteration's final weights; one inside it (``val_check_interval < 1``) a half-updated
    policy, which weight-choosing callbacks must not count."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def _changed(pl_module: L.LightningModule) -> None:
    """Tell the policy's engine that its weights changed (:meth:`~msgrpo.policy.LanguagePolicy.weights_changed`)."""
    policy = getattr(pl_module, "policy", None)
    if policy is not None and hasattr(policy, "weights_changed"):
        policy.weights_changed()


class PolicyAveraging(L.Callback):
    """Equal-weight average of the trainable weights at the end of each iteration from ``start`` on.

    Args:
        start: When averaging begins, as a fraction of ``trainer.max_epochs`` in ``[0, 1)``: the first
            averaged policy is the one after iteration ``ceil(start * max_epochs)`` (1-based;
            :func:`window_start`), so ``0.75`` of 200 iterations averages the policies after iterations 150
            to 200, 51 of them.

    An evaluation inside an iteration (``val_check_interval < 1``) sees the average of the iterations
    finished so far; the half-updated weights of the running iteration are never counted.
    """

    def __init__(self, start: float = 0.75) -> None:
        check_start(start, type(self).__name__)
        self.start = float(start)
        self.count = 0  # iterations averaged so far
        self.counted_epoch = -1  # the last iteration whose end-of-iteration weights are in the average
        self.average: dict[str, torch.Tensor] = {}  # name -> [*param shape], the running mean

    # ----- the average ---------------------------------------------------------------------------
    def first_epoch(self, trainer: L.Trainer) -> int:
        """The first averaged iteration (0-based)."""
        return window_start(trainer, self.start, "PolicyAveraging")

    def _catch_up(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Add the live weights of the iteration just finished, once per iteration."""
        epoch = trainer.current_epoch
        if epoch < self.first_epoch(trainer) or epoch <= self.counted_epoch:
            return
        self.count += 1
        with torch.no_grad():
            for name, param in trainable_parameters(pl_module).items():
                live = param.detach().float()
                if name not in self.average:
                    self.average[name] = live.clone()
                else:  # running mean: avg += (x - avg) / n
                    self.average[name].add_(live - self.average[name], alpha=1.0 / self.count)
        self.counted_epoch = epoch

    def _swap(self, pl_module: L.LightningModule) -> None:
        """Exchange the live weights and the average (twice = the identity, bit for bit)."""
        if not self.average:
            return
        with torch.no_grad():
            for name, param in trainable_parameters(pl_module).items():
                live = param.detach().float()  # a new tensor unless float32: then clone it
                live = live.clone() if live.data_ptr() == param.data_ptr() else live
                param.copy_(self.average[name].to(param.dtype))
                self.average[name] = live
        self._swapped = not getattr(self, "_swapped", False)
        _changed(pl_module)

    # ----- hooks ---------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_epoch(trainer)  # fail at once on a run without max_epochs
        self._swapped = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._catch_up(trainer, pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            if at_iteration_end(trainer):  # the evaluation at an iteration's end includes it (Lightning
                self._catch_up(trainer, pl_module)  # evaluates before on_train_epoch_end); one inside must not
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(self, "_swapped", False):
            self._swap(pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # (the last iteration is in the average already: on_train_epoch_end ran for it; after training has
        # ended, so a checkpoint saved when it ends, GracefulShutdown's, still holds the live weights)
        if self.average:
            with torch.no_grad():
                for name, param in trainable_parameters(pl_module).items():
                    param.copy_(self.average[name].to(param.dtype))
            _changed(pl_module)

    # ----- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "counted_epoch": self.counted_epoch, "start": self.start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = state_dict["count"]
        self.counted_epoch = state_dict["counted_epoch"]

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """``state_dict`` gets the average (what a user loads to use the policy), ``LIVE_KEY`` the live
        trainable weights (what a resumed run continues from)."""
        if not self.average or "state_dict" not in checkpoint or getattr(self, "_swapped", False):
            return
        state = checkpoint["state_dict"]
        live = {}
        for name, value in self.average.items():
            if name in state:
                live[name] = state[name]
                state[name] = value.to(state[name].dtype).clone()
        checkpoint[LIVE_KEY] = live

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Called after the model loaded ``state_dict`` (the average): put the live weights back."""
        live = checkpoint.get(LIVE_KEY)
        if not live or trainer.state.fn != "fit":  # test / validate / predict use the average as loaded
            return
        params = trainable_parameters(pl_module)
        with torch.no_grad():
            self.average = {}
            for name, value in live.items():
                self.average[name] = params[name].detach().float().clone()  # the loaded average
                params[name].copy_(value.to(params[name].dtype))
