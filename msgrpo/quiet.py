"""Silence the library notices that are not about the user's own settings.

A normal run should print only what concerns the run: these are advertisements and deprecation notices
of the libraries we build on, or warnings about choices this framework makes on purpose.
"""

from __future__ import annotations

import logging
import warnings

_WARNINGS = (
    # Lightning's own use of a torch API torch has deprecated (lightning/pytorch/utilities/_pytree.py)
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # the policy keeps its model in eval mode on purpose: dropout off, so updates are exactly on-policy
    r"Found \d+ module\(s\) in eval mode at the start of training.*",
    # every rank yields its own mini-batches in the main process: worker processes would only add cost
    r".*does not have many workers.*",
    # transformers' own deprecations that peft still triggers (not about the user's settings)
    r"`is_gradient_checkpointing` is deprecated.*",
    r"`gradient_checkpointing_enable` is deprecated.*",
    # an iteration whose advantages are all 0 makes no optimizer step; its learning-rate schedule still
    # advances one iteration (torch warns when that happens before the first step)
    r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`.*",
)


class _NoTips(logging.Filter):
    """Drop Lightning's "💡 Tip: try installing ..." advertisements."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


def install() -> None:
    """Install the filters (idempotent)."""
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())


install()
