"""RolloutDataModule: fresh episodes every epoch (= one MS-GRPO iteration)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

import msgrpo.quiet  # noqa: F401  (library notices that are not about the user's settings)
from msgrpo.components.credit import CreditAssigner, EpisodeReturn
from msgrpo.components.samplers import AbsoluteAdvantageWeighted, EpisodeSampler
from msgrpo.errors import ConfigError, require
from msgrpo.evaluation import PANEL_SEED, Scenario, build_panel
from msgrpo.game import TextGame
from msgrpo.iteration import IterationSettings, RolloutHost, run_iteration
from msgrpo.observe import views
from msgrpo.seeding import SeedStreams, run_seed
from msgrpo.types import Episode, MicroBatch, MiniBatch

# _Items defines __len__ on purpose (Lightning needs the batch count) and is never split across workers
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")


def _identity(x):
    return x


class _Items(IterableDataset):
    """Every item of a list, in order, on every rank.

    An iterable dataset, so that Lightning never splits it with a ``DistributedSampler``: each rank
    already holds its own mini-batches (training) or must see every scenario (evaluation splits the
    seeds of a scenario itself).
    """

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class RolloutDataModule(L.LightningDataModule):
    """Generates fresh episodes with the current policy at every epoch.

    Each epoch: play ``num_groups x group_size`` episodes per rank (a group shares its reset seed), assign
    credit, sample episodes, turn their steps into single-turn samples, and yield
    ``num_minibatches x update_epochs`` mini-batches (one optimizer step each; fewer when an iteration
    has fewer step samples than ``num_minibatches``). With several processes every rank yields the same
    number of mini-batches, each with as many micro-batches on every rank (padded with blank ones), so
    every rank runs the same forward and backward passes.

    Everything random derives from ``(seed, iteration, rank)``: environment seeds, sampling, shuffling,
    and torch's global RNG (reseeded at each iteration, e.g. for LoRA dropout), so a run resumed from a
    checkpoint replays exactly the iterations it would have played.

    Args:
        game: The text game to train on.
        credit_assigner: Rewards -> per-step advantages (default :class:`EpisodeReturn`, MS-GRPO).
        sampler: Which episodes to train on (default :class:`AbsoluteAdvantageWeighted` over half the
            episodes).
        num_groups: Groups per rank per iteration (N).
        group_size: Episodes per group (G >= 2).
        num_minibatches: Optimizer steps per pass over the samples.
        update_epochs: Passes over the samples per iteration.
        token_budget: Max padded tokens per micro-batch (gradients are accumulated across micro-batches).
        seed: Seed of environment seeds and sampling; None (default) takes the run's seed
            (``seed_everything``, else 0).
        on_env_error: ``"record"`` (end that episode, record the error, go on) or ``"raise"``.
        env_step_timeout_s: Treat an env step taking longer as an env error (None = no limit).
        eval_scenarios: Scenario names for validation/test (default: all of the game's scenarios).
        eval_episodes: Episodes per scenario.
        eval_seed: First reset seed of the evaluation panel.
        reference_episodes: Episodes per scenario for the game's reference players (random, optimal or
            scripted: no model, so cheap) in the end-of-fit summary, on the panel's seeds and the ones
            after them. More episodes than the model's make the reference's mean nearly exact, so the
            trained policy's margin over it is limited by its own evaluation only. Default 1000.
        train_scenarios: Train on a mixture of the game's scenarios (names from
            :meth:`~msgrpo.game.TextGame.scenarios`): the groups cycle through them, the cycle running on
            across iterations and ranks (:meth:`group_games`), so every setting gets the same share of
            the run (e.g. Snake's ``[train, poison, two-opponents]``). None
            (default): every group plays ``game`` as configured.
        log_episodes: Training episodes per iteration whose transcripts are written under the log dir
            (``transcripts/train.jsonl``, and to TensorBoard): the first episode of each of the first
            groups. 0 (default) = none.
    """

    def __init__(
        self,
        game: TextGame,
        credit_assigner: CreditAssigner | None = None,
        sampler: EpisodeSampler | None = None,
        num_groups: int = 8,
        group_size: int = 8,
        num_minibatches: int = 1,
        update_epochs: int = 1,
        token_budget: int = 16384,
        seed: int | None = None,
        on_env_error: str = "record",
        env_step_timeout_s: float | None = 60.0,
        eval_scenarios: list[str] | None = None,
        eval_episodes: int = 50,
        eval_seed: int = PANEL_SEED,
        log_episodes: int = 0,
        train_scenarios: list[str] | None = None,
        reference_episodes: int = 1000,
    ) -> None:
        super().__init__()
        require(group_size >= 2, "group_size", ">= 2 (group-relative advantages)", group_size)
        for name, value in (
            ("num_groups", num_groups),
            ("num_minibatches", num_minibatches),
            ("update_epochs", update_epochs),
            ("token_budget", token_budget),
        ):
            require(value >= 1, name, ">= 1", value)
        require(on_env_error in ("record", "raise"), "on_env_error", "'record' or 'raise'", on_env_error)
        require(
            env_step_timeout_s is None or env_step_timeout_s > 0,
            "env_step_timeout_s",
            "> 0 or null",
            env_step_timeout_s,
        )
        require(eval_episodes >= 1, "eval_episodes", ">= 1", eval_episodes)
        require(log_episodes >= 0, "log_episodes", ">= 0", log_episodes)
        require(reference_episodes >= 1, "reference_episodes", ">= 1", reference_episodes)
        self.game = game
        self.credit_assigner = credit_assigner or EpisodeReturn()
        self.sampler = sampler or AbsoluteAdvantageWeighted(num_episodes=max(1, num_groups * group_size // 2))
        self.sampler.validate(num_groups * group_size)  # (the CLI names the sampler's own configuration key)
        self.num_groups = num_groups
        self.group_size = group_size
        self.num_minibatches = num_minibatches
        self.update_epochs = update_epochs
        self.token_budget = token_budget
        self.seed = run_seed() if seed is None else seed
        self.on_env_error = on_env_error
        self.env_step_timeout_s = env_step_timeout_s
        try:
            self.panel: list[Scenario] = build_panel(game, eval_scenarios, eval_episodes, eval_seed)
            self.reference_panel = build_panel(game, eval_scenarios, reference_episodes, eval_seed)
        except ValueError as err:
            raise ConfigError(f"eval_scenarios: {err}", setting="eval_scenarios") from err
        self.last_episodes: list[Episode] = []
        self.log_episodes = log_episodes
        self.train_scenarios = train_scenarios
        available = game.scenarios()
        unknown = [n for n in train_scenarios or [] if n not in available]
        require(not unknown and train_scenarios != [], "train_scenarios",
                f"a non-empty list of {type(game).__name__}'s scenarios {sorted(available)} or null (null: "
                "train on the game as configured; a recipe's list may name another game's)",
                train_scenarios)  # fmt: skip
        self.train_games = [available[n] for n in train_scenarios] if train_scenarios else [game]

    @property
    def settings(self) -> IterationSettings:
        """How an iteration plays and batches."""
        return IterationSettings(
            group_size=self.group_size,
            num_minibatches=self.num_minibatches,
            update_epochs=self.update_epochs,
            token_budget=self.token_budget,
            on_env_error=self.on_env_error,
            env_step_timeout_s=self.env_step_timeout_s,
        )

    # ----- helpers -------------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    @property
    def seeds(self) -> SeedStreams:
        """The run's named seeding streams (from ``seed``)."""
        return SeedStreams(self.seed)

    def group_seeds(self, iteration: int, rank: int = 0) -> list[int]:
        """Reset seeds of this rank's groups at ``iteration`` (distinct per rank, replayable on resume)."""
        return self.seeds.group_seeds(iteration, rank, self.num_groups)

    def group_games(self, iteration: int, rank: int = 0, world: int = 1) -> list[TextGame]:
        """The game each of this rank's groups plays at ``iteration``: one cycle through ``train_games``
        that runs on across ranks and iterations (group ``g`` of rank ``r`` is number
        ``(iteration * world + r) * num_groups + g`` of the run), so a mixture is balanced over the run
        even when the group count is not a multiple of the scenario count (3 scenarios over 8 groups:
        8 / 8 / 8 every 3 iterations, not 3 / 3 / 2 every time)."""
        first = (iteration * world + rank) * self.num_groups
        return [self.train_games[(first + g) % len(self.train_games)] for g in range(self.num_groups)]

    # ----- one iteration -------------------------------------------------------------------------
    def make_iteration(self, module: RolloutHost, iteration: int) -> list[MiniBatch]:
        """One MS-GRPO iteration's data (:func:`msgrpo.iteration.run_iteration`) for this rank."""
        rank, world = self._rank_world()
        pad_id = module.policy.tokenizer.pad_token_id
        batches, episodes = run_iteration(
            module,
            self.group_games(iteration, rank, world),
            self.credit_assigner,
            self.sampler,
            self.settings,
            self.group_seeds(iteration, rank),
            self.seeds.generators(iteration, rank, module.policy.device),
            equalize=(lambda b: self._equalize(module, b, pad_id)) if world > 1 else None,
        )
        self.last_episodes = episodes
        if self.log_episodes and self.trainer is not None:
            firsts = episodes[:: self.group_size][: self.log_episodes]  # different starts
            views.show_episodes(self.trainer, "train", self.game, firsts, iteration)
        if all(e.error is not None or not e.steps for e in episodes):
            first = next((e.error for e in episodes if e.error), "no steps")
            warnings.warn(
                f"iteration {iteration}: all {len(episodes)} episodes failed (first error: {first}); this "
                "iteration trains nothing (data.on_env_error=raise stops the run instead)",
                stacklevel=2,
            )
        return batches

    def _equalize(self, module, batches: list[MiniBatch], pad_id: int) -> None:
        """Give every rank as many mini-batches, and every mini-batch as many micro-batches, as the
        largest count over the ranks, padding with blank ones (no token counts, zero advantage): DDP
        all-reduces at every backward pass and FSDP gathers parameters at every forward pass, so every
        rank must run the same passes."""
        reduce = self.trainer.strategy.reduce
        target = int(reduce(torch.tensor(len(batches), device=module.device), reduce_op="max"))
        while len(batches) < target:  # a rank with too few samples for num_minibatches steps
            batches.append(MiniBatch([], num_tokens=0, num_sequences=0))
        counts = torch.tensor([len(b.micro_batches) for b in batches], device=module.device)
        for mini, count in zip(batches, reduce(counts, reduce_op="max").cpu().tolist()):
            while len(mini.micro_batches) < count:
                mini.micro_batches.append(MicroBatch.blank(pad_id))

    # ----- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Nothing random is carried between iterations (see the class docstring): only the settings
        that decide the seeds, to warn when a run resumes with different ones."""
        return {"seed": self.seed, "num_groups": self.num_groups, "group_size": self.group_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for key, value in state_dict.items():
            if getattr(self, key, value) != value:
                warnings.warn(
                    f"resuming with data.{key}={getattr(self, key)} but the checkpoint was trained with "
                    f"{value}: the remaining iterations differ from the uninterrupted run",
                    stacklevel=2,
                )

    # ----- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Make the trainer roll out fresh episodes every epoch, whatever it was built with.

        One epoch is one MS-GRPO iteration: the train dataloader must be rebuilt (a new rollout with the
        current policy) at every epoch. A plain ``Trainer`` reloads dataloaders only when asked, and would
        retrain on the first rollout's episodes with stale log-probs, so this sets
        ``reload_dataloaders_every_n_epochs = 1``; any other explicit value is an error.
        """
        trainer = self.trainer
        if trainer is None or stage != "fit":
            return
        every = trainer.reload_dataloaders_every_n_epochs
        if every not in (0, 1):
            raise ConfigError(
                "trainer.reload_dataloaders_every_n_epochs must be 1 (or left unset): every epoch is one "
                "MS-GRPO iteration and needs fresh episodes from the current policy",
                setting="reload_dataloaders_every_n_epochs",
                value=every,
            )
        trainer.reload_dataloaders_every_n_epochs = 1

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        module = trainer.lightning_module
        iteration = trainer.current_epoch
        rank, _ = self._rank_world()
        torch.manual_seed(self.seeds.torch_seed(iteration, rank))
        batches = self.make_iteration(module, iteration)
        return DataLoader(_Items(batches), batch_size=None, collate_fn=_identity)

    def _panel_loader(self) -> DataLoader:
        return DataLoader(_Items(self.panel), batch_size=None, collate_fn=_identity)

    def val_dataloader(self) -> DataLoader:
        return self._panel_loader()

    def test_dataloader(self) -> DataLoader:
        return self._panel_loader()
