"""What the training module keeps in, and restores from, a Lightning checkpoint: its counters and history,
and under LoRA the adapter alone (the frozen base is rebuilt from ``model_name_or_path`` on load)."""

from __future__ import annotations

from typing import Any

from torch import nn

from msgrpo.errors import ConfigError
from msgrpo.lm.loading import tokenizer_fingerprint

CHECKPOINT_KEY = "msgrpo"
"""Key of the framework's own entries in a Lightning checkpoint."""


def _trainable(policy: nn.Module) -> set[str]:
    return {f"policy.{n}" for n, p in policy.named_parameters() if p.requires_grad}


def keep_adapter_only(checkpoint: dict[str, Any], policy: nn.Module) -> None:
    """Drop the policy's frozen weights from ``checkpoint["state_dict"]`` (in place)."""
    trainable = _trainable(policy)
    checkpoint["state_dict"] = {
        k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("policy.") or k in trainable
    }


def fill_frozen_weights(checkpoint: dict[str, Any], module: nn.Module) -> None:
    """Put the frozen base weights back into an adapter-only ``checkpoint`` from ``module`` (built from the
    same base model); a one-line error when the adapter does not fit the policy's LoRA settings."""
    trainable = _trainable(module.policy)
    missing = sorted(trainable - set(checkpoint["state_dict"]))
    if missing:
        raise ConfigError(
            f"the checkpoint's LoRA adapter lacks {len(missing)} weights of this policy (e.g. "
            f"{missing[0]}): load it with the LoRA settings it was trained with"
        )
    full = {k: v for k, v in module.state_dict().items() if k.startswith("policy.")}
    full.update(checkpoint["state_dict"])
    checkpoint["state_dict"] = full


def save_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """Store the training module's counters and history; under LoRA keep only the trainable (adapter)
    weights (not under sharded strategies, which load every weight themselves)."""
    adapter_only = module.policy.uses_lora and "state_dict" in checkpoint and module.sharding.adapter_only_checkpoints
    if adapter_only:
        keep_adapter_only(checkpoint, module.policy)
    checkpoint[CHECKPOINT_KEY] = {
        "adapter_only": adapter_only,
        "bad_updates": module.guard.bad,
        "skipped_updates": module.guard.skipped,
        "rollbacks": module.rollbacks,
        "history": list(module.history),
        "tokenizer_sha256": tokenizer_fingerprint(module.policy.tokenizer),
    }


def load_state(module: Any, checkpoint: dict[str, Any]) -> None:
    """Restore what :func:`save_state` stored (before Lightning loads the weights)."""
    info = checkpoint.get(CHECKPOINT_KEY, {})
    saved, current = info.get("tokenizer_sha256"), tokenizer_fingerprint(module.policy.tokenizer)
    if saved is not None and saved != current:
        raise ConfigError(
            f"the checkpoint was trained with another tokenizer (vocabulary sha256 {saved[:12]}..., this policy's "
            f"is {current[:12]}...): its token ids mean other tokens here. Load it with the model and tokenizer "
            "it was trained with"
        )
    if info.get("adapter_only") and "state_dict" in checkpoint:
        fill_frozen_weights(checkpoint, module)
    module.guard.bad = info.get("bad_updates", 0)
    module.guard.skipped = info.get("skipped_updates", 0)
    module.rollbacks = info.get("rollbacks", 0)
    module.history = list(info.get("history", []))


def save_stop_checkpoint(trainer: Any) -> Any:
    """Save ``<checkpoint dir>/nonfinite-stop.ckpt`` (the run stops on non-finite updates); its path."""
    from msgrpo.callbacks import checkpoint_dir

    path = checkpoint_dir(trainer) / "nonfinite-stop.ckpt"
    trainer.save_checkpoint(path)
    return path
