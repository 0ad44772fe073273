"""A progress bar over MS-GRPO iterations (not over an iteration's mini-batches): success, return,
invalid-action rate and seconds per iteration, with an ETA for the whole run."""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning.pytorch.callbacks.progress import ProgressBar
from tqdm.auto import tqdm

SHOWN = {"success": "rollout/success_rate", "return": "rollout/return_mean", "invalid": "rollout/invalid_action_rate"}


class IterationProgressBar(ProgressBar):
    """One tick per iteration (epoch); the postfix shows the last iteration's training rollouts and the
    seconds it took, tqdm the elapsed time and the ETA of the run (``max_epochs``). Evaluation runs are
    announced on the bar's line."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: Any = None
        self._start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer, pl_module) -> None:
        if not self._enabled:
            return
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        self._bar = tqdm(
            total=total, initial=trainer.current_epoch, desc="MS-GRPO", unit="it", dynamic_ncols=True,
            file=sys.stderr, smoothing=0.1, leave=True,
        )  # fmt: skip

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._bar is None:
            return
        metrics = trainer.callback_metrics
        postfix = {name: f"{float(metrics[key]):.2f}" for name, key in SHOWN.items() if key in metrics}
        postfix["s/it"] = f"{time.perf_counter() - self._start:.1f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(1)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._bar is not None and not trainer.sanity_checking:
            self._bar.set_description_str("MS-GRPO (evaluating)")

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.set_description_str("MS-GRPO")

    def on_train_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)

    def print(self, *args: Any, **kwargs: Any) -> None:
        (self._bar.write if self._bar is not None else print)(" ".join(map(str, args)))
