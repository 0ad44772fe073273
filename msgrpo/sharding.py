"""Strategy handling in one place: what a Lightning strategy's parameter layout asks of the rest of the code.

:meth:`Sharding.of` builds one object from the trainer, once (``MSGRPOModule.setup``). It owns the
lockstep rule: when parameters are sharded (FSDP), they are gathered inside every forward pass, so every
rank must run the same forward passes; the policy's ``lockstep`` flag is set from here and read
everywhere else. Adding a strategy is one subclass: its :meth:`Sharding.matches` and the hooks that differ.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

from msgrpo.policy import LanguagePolicy

T = TypeVar("T")


class LockstepPolicy:
    """A :class:`LanguagePolicy` whose generate calls every rank makes together (the rollout's
    :class:`~msgrpo.rollout.Agent`).

    Each call runs exactly ``max_new_tokens`` forward passes; before each call the ranks agree (one
    all-reduce) whether any of them still has a live episode, and a rank whose episodes have all ended
    keeps making dummy calls (:meth:`finish`) until every rank is done.
    """

    lockstep = True

    def __init__(self, policy: LanguagePolicy, any_rank: Callable[[bool], bool]) -> None:
        self._policy = policy
        self._any_rank = any_rank
        self.response_prefix = policy.response_prefix
        self.encode = policy.encode

    @property
    def device(self) -> torch.device:
        return self._policy.device

    def generate(self, prompts, generator=None, greedy=False, fixed_steps=True):
        self._any_rank(True)  # this rank is live: the others join with dummy calls
        return self._policy.generate(prompts, generator=generator, greedy=greedy, fixed_steps=True)

    def finish(self) -> None:
        """Make dummy calls while any other rank still plays."""
        dummy = [torch.tensor([self._policy.tokenizer.pad_token_id])]
        while self._any_rank(False):
            self._policy.generate(dummy, greedy=True, fixed_steps=True)


class Sharding:
    """Replicated parameters (one process, DDP): nothing special.

    Args:
        trainer: The Lightning trainer (None outside one: one process).
    """

    #: Whether the parameters are split over the ranks.
    sharded = False
    #: Under LoRA, whether checkpoints may keep the adapter alone (sharded strategies load every weight
    #: themselves, strictly, before any hook runs).
    adapter_only_checkpoints = True

    def __init__(self, trainer: Any = None) -> None:
        self.trainer = trainer

    @staticmethod
    def matches(strategy: Any) -> bool:
        """Whether this layout is the one of a Lightning ``strategy`` (every subclass says; the base is the
        fallback)."""
        return True

    @staticmethod
    def of(trainer: Any) -> Sharding:
        """The layout of ``trainer``'s strategy: the subclass that matches it, else replicated."""
        if trainer is None:
            return Sharding()
        layout = next((cls for cls in Sharding.__subclasses__() if cls.matches(trainer.strategy)), Sharding)
        return layout(trainer)

    @property
    def world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def lockstep(self) -> bool:
        """Every rank must run the same forward passes (sharded parameters on several ranks)."""
        return self.sharded and self.world_size > 1

    def attach(self, policy: LanguagePolicy) -> None:
        """Tell the policy whether it runs in lockstep (the one place its flag is set)."""
        policy.lockstep = self.lockstep

    def shard(self, module: Any) -> None:
        """Split the policy's parameters over the ranks (``configure_model``); nothing by default."""

    @contextmanager
    def numerics(self) -> Iterator[None]:
        """The precision plugin's forward context (autocast under ``*-mixed``), for forward passes that
        Lightning does not wrap itself (rollouts, reference scoring, evaluations between iterations): every
        pass of the policy then has the numerics of the update. Nests harmlessly inside Lightning's own."""
        if self.trainer is None:
            yield
            return
        with self.trainer.precision_plugin.forward_context():
            yield

    def run(self, module: Any, fn: Callable[[], T]) -> T:
        """Run ``fn`` (rollouts: generation and reference scoring) where the strategy's model can run,
        under :meth:`numerics`."""
        with self.numerics():
            return fn()

    @contextmanager
    def players(self, policy: LanguagePolicy) -> Iterator[LanguagePolicy]:
        """The policy to play episodes with: in lockstep, one whose generate calls every rank makes together."""
        if not self.lockstep:
            yield policy
            return
        agent = LockstepPolicy(policy, self.any_rank)
        yield agent  # type: ignore[misc]
        agent.finish()

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank (a collective)."""
        value = torch.tensor(int(flag), device=self.trainer.strategy.root_device)
        return bool(self.trainer.strategy.reduce(value, reduce_op="max"))

    # collectives that are plain values with one process (every rank gets the same answer)
    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor(value, device=self.trainer.strategy.root_device)
        return float(self.trainer.strategy.reduce(tensor, reduce_op="mean"))

    def all(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank."""
        return flag if self.world_size == 1 else self.trainer.strategy.reduce_boolean_decision(flag, all=True)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on some rank."""
        return flag if self.world_size == 1 else self.trainer.strategy.reduce_boolean_decision(flag, all=False)

    def release(self, policy: LanguagePolicy) -> None:
        """After a forward pass outside the backward (the trust region's KL check), before the parameters
        change again: drop any gathered copy of them, so the next forward sees the changed ones. Nothing
        to drop by default."""

    def clip_gradients(self, module: Any, optimizer: Any, max_norm: float) -> None:
        """Clip the global gradient norm (DTensor gradients under FSDP2: torch computes the global norm)."""
        module.clip_gradients(optimizer, gradient_clip_val=max_norm, gradient_clip_algorithm="norm")


class FSDP(Sharding):
    """Lightning's ``fsdp`` strategy (FSDP1, GPUs only)."""

    sharded = True
    adapter_only_checkpoints = False

    @staticmethod
    def matches(strategy: Any) -> bool:
        from lightning.pytorch.strategies import FSDPStrategy

        return isinstance(strategy, FSDPStrategy)

    def run(self, module: Any, fn: Callable[[], T]) -> T:
        """Inside the wrapped root's forward (Lightning's forward redirection): FSDP1 allows no forward
        pass outside it."""
        strategy = self.trainer.strategy
        if strategy.model is module:
            return super().run(module, fn)
        return super().run(module, lambda: strategy._forward_redirection(strategy.model, module, "_call", fn))

    def clip_gradients(self, module: Any, optimizer: Any, max_norm: float) -> None:
        """Through the wrapper (Lightning's ``FSDPPrecision`` refuses norm clipping)."""
        self.trainer.strategy.model.clip_grad_norm_(max_norm)


class FSDP2(Sharding):
    """``ModelParallelStrategy``: the policy is sharded with ``fully_shard`` (FSDP2) over every process.

    Every decoder layer (the model's ``_no_split_modules`` classes) becomes one FSDP unit and the rest of
    the model the root unit; the KL reference, when there is one, is sharded alike. Every process is a
    data-parallel rank (it plays its own episodes); tensor parallelism is not used.
    """

    sharded = True
    adapter_only_checkpoints = False

    @staticmethod
    def matches(strategy: Any) -> bool:
        from lightning.pytorch.strategies import ModelParallelStrategy

        return isinstance(strategy, ModelParallelStrategy)

    def shard(self, module: Any) -> None:
        mesh = module.device_mesh
        if mesh is None or getattr(module, "_fully_sharded", False):
            return
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        if mesh.ndim != 1:
            if mesh["tensor_parallel"].size() > 1:
                warnings.warn(
                    "msgrpo does not use tensor parallelism: the policy is sharded FSDP-style over all "
                    f"{mesh.size()} processes (set ModelParallelStrategy(data_parallel_size={mesh.size()}, "
                    "tensor_parallel_size=1) to silence this)",
                    stacklevel=2,
                )
            mesh = init_device_mesh(mesh.device_type, (mesh.size(),), mesh_dim_names=("data_parallel",))
        for model in (module.policy.model, module.policy.reference):
            if model is not None:
                _fully_shard(model, mesh, fully_shard)
        module._fully_sharded = True

    def release(self, policy: LanguagePolicy) -> None:
        """Reshard every unit: FSDP2 keeps the root unit's parameters gathered after a forward pass (the
        backward would reshard them), so after a no-grad forward, a step undone by copying into the
        shards would otherwise leave the next forward on the undone step's root parameters."""
        from torch.distributed.fsdp import FSDPModule

        for model in (policy.model, policy.reference):
            for unit in model.modules() if model is not None else ():
                if isinstance(unit, FSDPModule):
                    unit.reshard()


def _fully_shard(model: nn.Module, mesh: Any, fully_shard: Callable) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer_classes = set(getattr(base, "_no_split_modules", None) or [])
    for layer in [m for m in model.modules() if type(m).__name__ in layer_classes]:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
