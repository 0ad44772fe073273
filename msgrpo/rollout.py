"""Lockstep rollout engine: many episodes, one batched generate call per environment step.

Pure (no Lightning): give it a policy, a game and seeds; get episodes back.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from msgrpo.game import TextGame
from msgrpo.lm.decoding import Generation
from msgrpo.types import Episode, Step


class Agent(Protocol):
    """What the rollout needs of a policy (:class:`msgrpo.policy.LanguagePolicy` provides it, and so does a
    sharded strategy's :class:`msgrpo.sharding.LockstepPolicy`).

    Attributes:
        response_prefix: Text the assistant turn starts with (prepended to each completion before parsing).
        lockstep: Every rank must make the same generate calls (sharded parameters): one call per
            environment step for every live episode, whatever their games.
        device: Where sampling generators live.
    """

    response_prefix: str
    lockstep: bool
    device: torch.device

    def encode(self, messages: list[list[dict[str, str]]]) -> list[torch.Tensor]:
        """Chat-template and tokenise conversations: ``B`` prompt-id tensors ``[P_b]``."""

    def generate(
        self, prompts: list[torch.Tensor], generator: torch.Generator | None = None, greedy: bool = False
    ) -> Generation:
        """One completion per prompt, with its exact log-probs under the sampling distribution."""


@dataclass
class RolloutTiming:
    """Where rollout time went.

    Attributes:
        total_s: Wall time of the rollout.
        forward_s: Time inside model forward passes.
        generated_tokens: Completion tokens generated.
        generate_calls: Batched generate calls (one per environment step).
    """

    total_s: float = 0.0
    forward_s: float = 0.0
    generated_tokens: int = 0
    generate_calls: int = 0


class EnvTimeout(TimeoutError):
    """An environment step took longer than the configured limit."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`EnvTimeout` in the block after ``seconds`` (main thread on Unix; else no limit)."""
    usable = seconds is not None and hasattr(signal, "setitimer")
    usable = usable and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise EnvTimeout(f"environment step exceeded {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _guarded(fn: Callable, seconds: float | None):
    with time_limit(seconds):
        return fn()


def _by_game(live: list[int], episodes: list[Episode]) -> list[list[int]]:
    """The live episodes split by their game (:attr:`Episode.game`), first appearance first (one bucket
    when all share one).

    Each bucket is one generate call: prompts of one game share their long prefix (run once, see
    :mod:`msgrpo.lm.prefix`) and similar lengths (little padding), where a mixture's prompts share little.
    """
    buckets: dict[int, list[int]] = {}
    for i in live:
        buckets.setdefault(episodes[i].game, []).append(i)
    return list(buckets.values())


def play(
    policy: Agent,
    game: TextGame | Sequence[TextGame],
    group_seeds: Sequence[int],
    group_size: int,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    on_env_error: Literal["record", "raise"] = "record",
    timing: RolloutTiming | None = None,
    env_step_timeout_s: float | None = None,
    observe: Callable[[int, Episode, object], None] | None = None,
) -> list[Episode]:
    """Play ``len(group_seeds) x group_size`` episodes in lockstep.

    Every episode of group ``g`` is reset with ``group_seeds[g]``. At each environment step, every live
    episode's current state is rendered, the prompts go through one batched generate call per game (one
    call in all for a single game, or in lockstep), and each completion is interpreted and
    executed. Finished episodes leave the batch at once.

    Args:
        policy: The language-agent policy.
        game: The text game, or one game per group (groups of a mixture of settings).
        group_seeds: One reset seed per group.
        group_size: Episodes per group (G).
        generator: Sampling RNG (determinism); global RNG when None.
        greedy: Argmax decoding (evaluation).
        on_env_error: ``"record"``: an env that raises ends its episode with ``Episode.error`` set and the
            others go on; ``"raise"``: re-raise.
        timing: Filled with where the time went, when given.
        env_step_timeout_s: An env step (or reset) taking longer raises :class:`EnvTimeout`, handled like
            any env error, so one stuck env never hangs the run (Unix main thread only).
        observe: Called as ``observe(index, episode, env)`` at every state an episode passes through
            (after the reset and after each step), e.g. to draw replay frames.

    Returns:
        Episodes ordered group by group: index ``g * group_size + i``.
    """
    start = time.perf_counter()
    games = list(game) if isinstance(game, Sequence) else [game] * len(group_seeds)
    if len(games) != len(group_seeds):
        raise ValueError(f"play: {len(games)} games for {len(group_seeds)} groups")
    distinct: dict[int, int] = {}
    game_index = [distinct.setdefault(id(g), len(distinct)) for g in games]  # per group: Episode.game
    episodes: list[Episode] = []
    envs = []

    def game_of(i: int) -> TextGame:  # episode i's game: its group's
        return games[episodes[i].group_id]

    for g, seed in enumerate(group_seeds):
        for _ in range(group_size):
            episode = Episode(group_id=g, seed=int(seed), game=game_index[g])
            env = games[g].make_env()
            try:
                _guarded(lambda: games[g].reset(env, seed), env_step_timeout_s)  # noqa: B023
            except Exception as err:
                if on_env_error == "raise":
                    raise
                episode.error = f"{type(err).__name__} at reset: {err}"
            envs.append(env)
            episodes.append(episode)
    live = [i for i, e in enumerate(episodes) if e.error is None]
    if observe is not None:
        for i in live:
            observe(i, episodes[i], envs[i])
    while live:
        still_live = []
        for bucket in [live] if getattr(policy, "lockstep", False) else _by_game(live, episodes):
            observations = [game_of(i).render(envs[i]) for i in bucket]
            messages = [game_of(i).chat(obs) for i, obs in zip(bucket, observations)]
            prompts = policy.encode(messages)
            gen = policy.generate(prompts, generator=generator, greedy=greedy)
            if timing is not None:
                timing.forward_s += gen.forward_s
                timing.generate_calls += 1
                timing.generated_tokens += sum(int(c.numel()) for c in gen.completion_ids)
            for k, i in enumerate(bucket):
                episode = episodes[i]
                text = policy.response_prefix + gen.texts[k]
                try:
                    result = _guarded(lambda: game_of(i).act(envs[i], text), env_step_timeout_s)  # noqa: B023
                except Exception as err:  # an env fault ends this episode only
                    if on_env_error == "raise":
                        raise
                    episode.error = f"{type(err).__name__}: {err}"
                    continue
                episode.steps.append(
                    Step(
                        observation=observations[k],
                        prompt_ids=prompts[k],
                        completion_ids=gen.completion_ids[k],
                        logprobs=gen.logprobs[k],
                        text=gen.texts[k],
                        action=result.action,
                        valid=result.valid,
                        reward=result.reward,
                    )
                )
                episode.terminated, episode.truncated = result.terminated, result.truncated
                if observe is not None:
                    observe(i, episode, envs[i])
                if episode.done:
                    ended = (result.reward, result.terminated, result.truncated, result.info)
                    episode.success = game_of(i).is_success(*ended)
                else:
                    still_live.append(i)
        live = sorted(still_live)
    if timing is not None:
        timing.total_s += time.perf_counter() - start
    return episodes
