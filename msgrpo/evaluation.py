"""Evaluation panels: named scenarios with fixed seeds, and their summary statistics."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from msgrpo.game import TextGame
from msgrpo.observe import views
from msgrpo.seeding import PANEL_SEED
from msgrpo.types import Episode

"""First reset seed of every evaluation panel (training seeds start at the run seed, far below)."""


@dataclass
class Scenario:
    """A named evaluation scenario: a game setting and its fixed reset seeds.

    Attributes:
        name: Scenario name (``nonslip-4x4``...).
        game: The game, configured for this scenario.
        seeds: One reset seed per evaluation episode.
    """

    name: str
    game: TextGame
    seeds: list[int]


def build_panel(
    game: TextGame, names: Sequence[str] | None = None, episodes: int = 50, seed: int = PANEL_SEED
) -> list[Scenario]:
    """The evaluation panel of ``game``: its named scenarios, ``episodes`` fixed seeds each.

    The same name, episode count and seed give the same maps and seeds on every machine.

    Args:
        game: The game whose :meth:`TextGame.scenarios` define the panel.
        names: Which scenarios (default: the game's :meth:`~msgrpo.game.TextGame.default_scenarios`, else
            all it defines).
        episodes: Episodes per scenario.
        seed: First reset seed; scenario episodes use ``seed, seed + 1, ...``.

    Raises:
        ValueError: For an unknown scenario name or ``episodes < 1``.
    """
    if episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {episodes}")
    available = game.scenarios()
    names = game.default_scenarios() if names is None else names
    chosen = list(available) if names is None else list(names)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown} for {type(game).__name__}; choose from {sorted(available)}")
    seeds = list(range(seed, seed + episodes))
    return [Scenario(n, available[n], seeds) for n in chosen]


def summarize(episodes: Sequence[Episode]) -> dict[str, float]:
    """Summary statistics of a set of episodes.

    Returns:
        ``return_mean``, ``return_stderr`` (standard error of the mean, 0 for one episode),
        ``success_rate``, ``invalid_action_rate`` (invalid steps / all steps), ``episode_len``,
        ``episodes``, ``error_rate``.
    """
    n = len(episodes)
    if n == 0:
        raise ValueError("summarize() needs at least one episode")
    returns = [e.total_reward for e in episodes]
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1) if n > 1 else 0.0
    steps = sum(e.length for e in episodes)
    return {
        "return_mean": mean,
        "return_stderr": math.sqrt(var / n),
        "success_rate": sum(e.success for e in episodes) / n,
        "invalid_action_rate": sum(e.invalid_steps for e in episodes) / max(steps, 1),
        "episode_len": steps / n,
        "error_rate": sum(e.error is not None for e in episodes) / n,
        "episodes": float(n),
    }


def margin_se(policy: dict[str, float], reference: dict[str, float]) -> float:
    """How far ``policy``'s mean return is above ``reference``'s, in standard errors of the difference.

    ``(mean_p - mean_r) / sqrt(se_p^2 + se_r^2)``, the standard error of a difference of independent means
    (of any sizes): 3 or more is a clear win. The samples are not quite independent in the end-of-fit table
    and the benchmarks: the reference players play the model's seeds first (then more), so the two share
    their first episodes' start states. On a shared seed the outcomes of two players are usually positively
    correlated (the same board is easy or hard for both), which makes the true standard error of the
    difference smaller than this one: the reported margin is then slightly conservative. When both standard
    errors are 0 (every episode of each scored the same), any difference is exact: +-inf, and 0 for equal
    means.

    Args:
        policy: A :func:`summarize` summary (``return_mean``, ``return_stderr``).
        reference: Another one, e.g. the random player's on the same scenario.
    """
    diff = policy["return_mean"] - reference["return_mean"]
    se = math.hypot(policy["return_stderr"], reference["return_stderr"])
    if se > 0:
        return diff / se
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def format_table(
    results: dict[str, dict[str, float]], references: dict[str, dict[str, dict[str, float]]] | None = None
) -> str:
    """A plain-text table of per-scenario results (rows = scenarios).

    Args:
        results: ``scenario -> summary`` of the policy evaluated.
        references: ``reference policy -> scenario -> summary`` (e.g. random and optimal players, on the
            same seeds and usually more of them: they need no model), printed under each scenario's row,
            with the episode counts and, on the policy's row, its margin over the random player in
            standard errors (:func:`margin_se`); None for the plain table.
    """
    with_refs = references is not None

    def row(first: str, policy: str | None, r: dict[str, float], margin: str = "") -> str:
        ret = f"{r['return_mean']:.3f} ± {r['return_stderr']:.3f}"
        who = "" if policy is None else f" {policy:<8}"
        invalid = f"{r['invalid_action_rate']:>8.3f}" if "invalid_action_rate" in r else f"{'-':>8}"
        line = f"{first:<16}{who} {r['success_rate']:>8.3f} {ret:>16} {invalid} {r['episode_len']:>7.2f}"
        if with_refs:
            line += f" {int(r.get('episodes', 0)):>8d} {margin:>10}"
        return line.rstrip()

    extra = f" {'episodes':>8} {'vs random':>10}" if with_refs else ""
    policy_col = "" if references is None else f" {'policy':<8}"
    header = f"{'scenario':<16}{policy_col} {'success':>8} {'return':>16} {'invalid':>8} {'length':>7}{extra}"
    lines = [header, "-" * len(header)]
    random = (references or {}).get("random", {})
    for name, r in results.items():
        margin = f"{margin_se(r, random[name]):+.1f} SE" if name in random else ""
        lines.append(row(name, None if references is None else "trained", r, margin))
        for policy, by_scenario in (references or {}).items():
            if name in by_scenario:
                lines.append(row("", policy, by_scenario[name]))
    if random:
        lines.append(
            "(vs random: the mean return's margin over the random player's, in standard errors of the "
            "difference; 3 or more is a clear win)"
        )
    return "\n".join(lines)


def to_json(results: dict[str, dict[str, float]]) -> str:
    """``{"scenarios": {name: {...}}}`` as one JSON line."""
    return json.dumps({"scenarios": results}, sort_keys=True)


@dataclass
class EpisodeRecord:
    """What :func:`summarize` needs of an episode: small enough to gather across ranks.

    Attributes:
        total_reward: The episode return.
        success: Whether the game counted it a success.
        length: Steps taken.
        invalid_steps: Steps whose completion named no valid action.
        error: ``"error"`` when the environment raised, else None.
    """

    total_reward: float
    success: bool
    length: int
    invalid_steps: int
    error: str | None = None

    @classmethod
    def of(cls, episode: Episode) -> EpisodeRecord:
        return cls(
            episode.total_reward,
            bool(episode.success),
            episode.length,
            episode.invalid_steps,
            None if episode.error is None else "error",
        )


def records_to_rows(index: Sequence[int], records: Sequence[EpisodeRecord], rows_per_rank: int):
    """Records as float64 rows ``[rows_per_rank, 6]`` (seed index, return, success, length, invalid steps,
    error), padded with index -1: what ranks all-gather."""
    import torch

    rows = torch.full((rows_per_rank, 6), -1.0, dtype=torch.float64)
    for row, (i, r) in enumerate(zip(index, records)):
        rows[row] = torch.tensor(
            [i, r.total_reward, r.success, r.length, r.invalid_steps, r.error is not None], dtype=torch.float64
        )
    return rows


def rows_to_records(gathered) -> list[EpisodeRecord]:
    """Every rank's rows (``[N, 6]``, see :func:`records_to_rows`) back to records, in seed order."""
    gathered = gathered[gathered[:, 0] >= 0]
    gathered = gathered[gathered[:, 0].argsort()]
    return [
        EpisodeRecord(float(r[1]), bool(r[2]), int(r[3]), int(r[4]), "error" if r[5] else None)
        for r in gathered.tolist()
    ]


def evaluate(
    agent,
    scenario: Scenario,
    greedy: bool,
    rank: int = 0,
    world: int = 1,
    all_gather=None,
    keep: list[Episode] | None = None,
    observe=None,
) -> dict[str, float]:
    """Play a scenario's fixed seeds (one episode per seed) with ``agent`` and summarise them.

    With several processes each rank plays every ``world``-th seed and ``all_gather`` (a tensor collective)
    collects the records, summarised in seed order on every rank: with greedy decoding the result is that
    of one process (sampled evaluation draws differ with the split).

    Args:
        keep: Filled with this rank's episodes (seeds ``rank, rank + world, ...``), e.g. for transcripts.
        observe: Passed to :func:`msgrpo.rollout.play` (replay frames).
    """
    import torch

    from msgrpo.rollout import play

    index = list(range(rank, len(scenario.seeds), world))
    episodes = play(
        agent,
        scenario.game,
        [scenario.seeds[i] for i in index],
        group_size=1,
        generator=torch.Generator(device=agent.device).manual_seed(0),
        greedy=greedy,
        observe=observe,
    )
    if keep is not None:
        keep.extend(episodes)
    records = [EpisodeRecord.of(e) for e in episodes]
    if world > 1:
        rows = records_to_rows(index, records, -(-len(scenario.seeds) // world))
        records = rows_to_records(all_gather(rows).reshape(-1, 6).cpu())
    return summarize(records)


REPORTED = ("success_rate", "return_mean", "return_stderr", "invalid_action_rate", "episode_len")
"""What an evaluation reports per scenario (``eval/<scenario>/<key>``, the tables, the baselines' JSON)."""


class EvaluationSteps:
    """The evaluation half of :class:`~msgrpo.module.MSGRPOModule` (a mixin): the validation and test steps
    that play the panel's scenarios, :meth:`evaluate` for callbacks, and the rule that ``fit`` always ends
    with an evaluation.

    Uses the module's ``sharding``, ``lockstep()``, ``eval_greedy``, ``transcripts``, ``eval_results`` and
    Lightning's ``log``, ``all_gather`` and ``trainer``.
    """

    def evaluate_after_last_iteration(self) -> None:
        """``fit`` always ends with an evaluation: at the last iteration (``trainer.max_epochs``) the validation
        loop runs whatever ``check_val_every_n_epoch`` says (the Snake recipe evaluates every 200 iterations;
        a run with ``--trainer.max_epochs=50`` still ends with its table); a run stopped early, see
        :meth:`on_train_batch_end`."""
        trainer = self._trainer
        if trainer is None or trainer.max_epochs is None or trainer.max_epochs < 1:
            return
        every = trainer.check_val_every_n_epoch
        if every and self.current_epoch == trainer.max_epochs - 1 and trainer.max_epochs % every:
            self._check_val_every = every  # put back when training ends
            trainer.check_val_every_n_epoch = 1  # (read by Lightning at the iteration's end)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """A run stopped early (its ``max_time``, an early-stopping rule) also ends with an evaluation: once a
        callback has set ``trainer.should_stop`` during an iteration, Lightning's validation check at the
        end of that batch passes (it allows validation when stopping early) if this iteration is one it
        evaluates, which this makes it. (A stop on SIGTERM is decided at the iteration's end, after the
        check: it saves and exits without spending the grace period on games.)"""
        trainer = self._trainer
        every = trainer.check_val_every_n_epoch if trainer is not None else None
        if every and every != 1 and trainer.should_stop and "_check_val_every" not in self.__dict__:
            self._check_val_every = every  # put back when training ends
            trainer.check_val_every_n_epoch = 1

    def on_train_end(self) -> None:
        every = self.__dict__.pop("_check_val_every", None)
        if every is not None:
            self.trainer.check_val_every_n_epoch = every

    def evaluate(self, scenario: Scenario, keep: list | None = None, observe=None) -> dict[str, float]:
        """Play a scenario's fixed seeds and summarise them (:func:`msgrpo.evaluation.evaluate`; split over
        the ranks and gathered), under the precision plugin's numerics wherever it is called from (a
        validation step, or a callback between iterations such as :class:`~msgrpo.callbacks.selection.BestPolicy`)."""
        rank, world = self._world()
        gather = lambda t: self.all_gather(t.to(self.device))  # noqa: E731
        with self.sharding.numerics(), self.lockstep() as agent:
            return evaluate(agent, scenario, self.eval_greedy, rank, world, gather, keep, observe)

    def _eval_step(self, scenario: Scenario) -> None:
        episodes, frames = [], []
        draw = self.transcripts and views.wants_frames(self._trainer)
        result = self.evaluate(scenario, episodes, views.first_episode_frames(scenario.game, frames) if draw else None)
        if self.transcripts:
            views.show_episodes(self.trainer, "eval", scenario.game, episodes[: self.transcripts],
                                self.current_epoch, scenario.name, frames)  # fmt: skip
        self.eval_results[scenario.name] = result
        for key in REPORTED:
            # identical on every rank (gathered): "max" keeps the value exact where a mean could round
            self.log(f"eval/{scenario.name}/{key}", result[key], reduce_fx="max")

    def validation_step(self, batch: Scenario, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Scenario, batch_idx: int) -> None:
        self._eval_step(batch)
