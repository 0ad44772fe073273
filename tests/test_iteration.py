"""One iteration's data (``msgrpo.iteration``): errored episodes, step-level credit and the sampler."""

import pytest
import torch

from msgrpo.components.credit import DiscountedReturn, EpisodeReturn, StepReward
from msgrpo.components.samplers import AbsoluteAdvantageWeighted, All
from msgrpo.iteration import build_iteration
from msgrpo.types import Episode, Step


def _episode(group: int, rewards: list[float], error: str | None = None, prompt: int = 0) -> Episode:
    prompt_ids = [torch.tensor([1, 2, prompt, t]) for t in range(len(rewards))]
    steps = [
        Step(f"obs {prompt} {t}", ids, torch.tensor([7]), torch.tensor([-1.0]), "x", 0, True, r)
        for t, (ids, r) in enumerate(zip(prompt_ids, rewards))
    ]
    return Episode(group_id=group, seed=group, steps=steps, error=error)


def _build(episodes, credit, sampler, seed=0, **kw):
    args = dict(num_minibatches=1, update_epochs=1, token_budget=10_000, pad_id=0)
    return build_iteration(episodes, credit, sampler, generator=torch.Generator().manual_seed(seed), **(args | kw))


def test_errored_episodes_take_no_part_in_group_statistics_or_the_update():
    # three healthy episodes with equal returns and one that errored (partial return 0): the healthy
    # ones carry no advantage (with the errored one in the statistics each would get +0.577)
    healthy = [_episode(0, [1.0]) for _ in range(3)]
    episodes = [*healthy, _episode(0, [], error="boom at reset")]
    episodes[3].steps = [episodes[0].steps[0]]  # even an errored episode that took steps is left out
    data = _build(episodes, EpisodeReturn(), All())
    assert data.healthy.tolist() == [0, 1, 2] and 3 not in data.chosen.tolist()
    assert all(float(a.abs().sum()) == 0 for a in data.advantages)
    assert sum(b.num_sequences for b in data.batches) == 3


def test_errored_episode_does_not_shift_the_advantages_of_the_others():
    episodes = [_episode(0, [1.0]), _episode(0, [0.0]), _episode(0, [0.3, 0.3], error="timeout")]
    data = _build(episodes, EpisodeReturn(), All())
    assert [round(float(a[0]), 5) for a in data.advantages[:2]] == [1.0, -1.0]  # (1 - 0.5) / 0.5
    assert data.advantages[2].abs().sum() == 0


def test_every_episode_failing_is_an_empty_iteration():
    episodes = [_episode(g, [], error="ValueError at reset: no") for g in range(4)]
    data = _build(episodes, EpisodeReturn(), AbsoluteAdvantageWeighted(num_episodes=2))
    assert data.batches == [] and data.healthy.numel() == 0 and data.chosen.numel() == 0


def test_sampler_weighs_episodes_by_their_step_advantages_whatever_the_credit():
    # group 0: equal returns (episode advantage 0) but the steps differ, so StepReward gives them
    # non-zero step advantages; group 1: different returns but every step reward equal, so every step
    # advantage is 0. The sampler must train on group 0, whose steps carry the signal.
    episodes = [_episode(0, [1.0, 0.0]), _episode(0, [0.0, 1.0]), _episode(1, [0.5]), _episode(1, [0.5, 0.5])]
    for seed in range(20):
        data = _build(episodes, StepReward(), AbsoluteAdvantageWeighted(num_episodes=2), seed=seed)
        assert sorted(data.chosen.tolist()) == [0, 1]
        assert all(float(m.advantages.abs().min()) > 0 for b in data.batches for m in b.micro_batches)
    # under EpisodeReturn the same rule is the paper's |A_i|: group 1 carries the signal
    data = _build(episodes, EpisodeReturn(), AbsoluteAdvantageWeighted(num_episodes=2))
    assert sorted(data.chosen.tolist()) == [2, 3]


def test_discounted_return_credit_reaches_the_sampler():
    # equal returns in group 0 but a reward early vs late: discounted returns-to-go differ per step
    episodes = [_episode(0, [1.0, 0.0, 0.0]), _episode(0, [0.0, 0.0, 1.0]), _episode(1, [0.0]), _episode(1, [0.0])]
    data = _build(episodes, DiscountedReturn(gamma=0.5), AbsoluteAdvantageWeighted(num_episodes=2))
    assert sorted(data.chosen.tolist()) == [0, 1]


def test_importance_weights_scale_the_drawn_episodes_advantages():
    # one group, returns [1, 0, 0, 0, 0, 0]: mean 1/6, std sqrt(5)/6, so A = 2.236 for the success and
    # -0.447 for each failure. 3 drawn by |A|: the success's share 3 * 2.236 / 4.472 = 1.5 is capped at 1,
    # the other 2 go to the failures, 0.4 each. 1 / pi = [1, 2.5, 2.5], normalised to mean 1: [0.5, 1.25,
    # 1.25]; trained advantages [1.118, -0.559, -0.559], which sum to 0 like the whole group's.
    episodes = [_episode(0, [1.0])] + [_episode(0, [0.0], prompt=i + 1) for i in range(5)]
    for seed in range(5):
        data = _build(episodes, EpisodeReturn(), AbsoluteAdvantageWeighted(num_episodes=3, reweight=True), seed=seed)
        assert len(data.chosen) == 3 and 0 in data.chosen.tolist()
        trained = sorted(float(a) for b in data.batches for m in b.micro_batches for a in m.advantages)
        assert trained == pytest.approx([-0.5590, -0.5590, 1.1180], abs=1e-4)


class _ScoringPolicy:
    """Scores every distinct row with fixed log-probs (``[U, C]``), as the update's pass would."""

    device = torch.device("cpu")

    def __init__(self, scores: torch.Tensor) -> None:
        self.scores = scores

    def sampling_logprobs(self, batch):
        return self.scores


def test_rescoring_replaces_old_logprobs_and_reports_the_largest_change():
    from msgrpo.iteration import rescore_old_logprobs
    from msgrpo.types import MicroBatch, MiniBatch

    # three samples on two distinct rows (samples 0 and 2 share row 0); completions of length 2 and 1
    micro = MicroBatch(
        input_ids=torch.tensor([[5, 6, 7, 8], [5, 6, 9, 0]]),
        attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        completion_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]),
        old_logprobs=torch.tensor([[-1.0, -2.0], [-0.5, 0.0], [-1.0, -2.0]]),
        advantages=torch.tensor([1.0, -1.0, 1.0]),
        rows=torch.tensor([0, 1, 0]),
    )
    # row 0 re-scores to -1.004, -2.0; row 1's token falls outside a truncated support (-inf): kept
    scores = torch.tensor([[-1.004, -2.0], [float("-inf"), 0.0]])
    worst = rescore_old_logprobs(_ScoringPolicy(scores), [MiniBatch([micro], num_tokens=5, num_sequences=3)])
    expected = torch.tensor([[-1.004, -2.0], [-0.5, 0.0], [-1.004, -2.0]])
    assert torch.allclose(micro.old_logprobs, expected)
    assert worst == pytest.approx(0.004, abs=1e-6)
