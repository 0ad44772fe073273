"""Credit assigners against hand-computed numbers.

Every expected value is written literally with the arithmetic beside it. ``std`` is the population std.
With ``scale_by_std`` the divisor is ``std + 1e-6``, hence the ``1e-5`` tolerances.
"""

from __future__ import annotations

import math

import pytest
import torch

from msgrpo.components.credit import (
    AnchorState,
    CreditAssigner,
    DiscountedReturn,
    EpisodeReturn,
    LeaveOneOut,
    StepReward,
    TerminalOnly,
    discounted_returns,
    episode_returns,
    group_normalize,
)

TOL = 1e-5


def R(*values: float) -> torch.Tensor:
    """One episode's step rewards."""
    return torch.tensor(values, dtype=torch.float32)


def G(*ids: int) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def check(got: list[torch.Tensor], expected: list[list[float]], tol: float = TOL) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.float32
        assert g.shape == (len(e),)
        assert not torch.isnan(g).any()
        assert torch.allclose(g, torch.tensor(e, dtype=torch.float32), atol=tol, rtol=0), (g, e)


def vec(got: torch.Tensor, expected: list[float], tol: float = TOL) -> None:
    assert got.shape == (len(expected),)
    want = torch.tensor(expected, dtype=torch.float32)
    assert torch.allclose(got.float(), want, atol=tol, rtol=0), (got, expected)


ALL_ASSIGNERS = [
    EpisodeReturn(),
    EpisodeReturn(stats_over="steps"),
    EpisodeReturn(scale_by_std=False),
    StepReward(),
    StepReward(scale_by_std=False),
    DiscountedReturn(),
    DiscountedReturn(gamma=0.5, scale_by_std=False),
    TerminalOnly(),
    AnchorState(),
    AnchorState(weight=0.5, gamma=0.9, scale_by_std=False),
    LeaveOneOut(),
    LeaveOneOut(scale_by_std=True),
]


def obs_like(rewards: list[torch.Tensor]) -> list[list[str]]:
    """Step ``t`` of every episode sees the same text ``s{t}`` (a deterministic game, identical episodes)."""
    return [[f"s{t}" for t in range(r.numel())] for r in rewards]


# ----- helpers ---------------------------------------------------------------------------------------
def test_group_normalize_hand_computed():
    # group 0: [1, 2, 3]: mean 2, std sqrt(2/3) = 0.816497 -> (-1, 0, 1) / 0.816497 = -1.224745, 0, 1.224745
    # group 1: [5]: one element -> 0
    out = group_normalize(torch.tensor([1.0, 5.0, 2.0, 3.0]), G(0, 1, 0, 0))
    vec(out, [-1.224745, 0.0, 0.0, 1.224745])
    # scale_by_std=False: just centred: 1-2, 5-5, 2-2, 3-2
    vec(group_normalize(torch.tensor([1.0, 5.0, 2.0, 3.0]), G(0, 1, 0, 0), scale_by_std=False), [-1, 0, 0, 1])


def test_group_normalize_equal_values_are_exactly_zero():
    # 39 copies of 0.1 (float64): the float mean is not exactly 0.1, so without the equal-values check
    # the centred values were ~1e-17 and, divided by std + eps, left ~1e-11 "advantages" behind.
    out = group_normalize(torch.full((39,), 0.1, dtype=torch.float64), torch.zeros(39, dtype=torch.long))
    assert torch.equal(out, torch.zeros(39))


def test_episode_returns_and_discounted_returns():
    # sums: 1+0 = 1; empty episode = 0; 0+0+1+1 = 2
    vec(episode_returns([R(1, 0), R(), R(0, 0, 1, 1)]), [1, 0, 2])
    # gamma 0.5, rewards [0, 0, 4]: G2 = 4, G1 = 0 + 0.5*4 = 2, G0 = 0 + 0.5*2 = 1
    vec(discounted_returns(R(0, 0, 4), 0.5), [1, 2, 4])
    # gamma 1: reward-to-go [1+2+3, 2+3, 3]
    vec(discounted_returns(R(1, 2, 3), 1.0), [6, 5, 3])


# ----- EpisodeReturn -----------------------------------------------------------------------------------
def test_episode_return_multiple_groups_different_lengths():
    rewards = [R(0, 0, 0), R(1, 1), R(1), R(1, 0, 0, 0), R(3, 1)]
    groups = G(0, 0, 1, 1, 2)
    # group 0: returns [0, 2], mean 1, std 1 -> A = [-1, 1]; every step carries its episode's A
    # group 1: returns [1, 1], all equal -> [0, 0]
    # group 2: one episode -> 0
    out = EpisodeReturn().assign(rewards, groups)
    check(out, [[-1, -1, -1], [1, 1], [0], [0, 0, 0, 0], [0, 0]])
    vec(EpisodeReturn().episode_advantages(rewards, groups), [-1, 1, 0, 0, 0])


def test_episode_return_stats_over_steps_differs_from_episodes():
    # episode a: rewards [2] (R=2, 1 step); episode b: truncated at 3 steps, rewards [0, 0, 0] (R=0)
    rewards, groups = [R(2), R(0, 0, 0)], G(0, 0)
    # episodes: returns [2, 0], mean 1, std 1 -> A = [1, -1]
    check(EpisodeReturn(stats_over="episodes").assign(rewards, groups), [[1], [-1, -1, -1]])
    # steps: rows [2, 0, 0, 0], mean 0.5, var (1.5^2 + 3 * 0.5^2) / 4 = 0.75, std 0.866025
    #   a: 1.5 / 0.866025 = 1.732051 (sqrt 3); b: -0.5 / 0.866025 = -0.577350 (-1/sqrt 3)
    check(EpisodeReturn(stats_over="steps").assign(rewards, groups), [[1.732051], [-0.577350] * 3])
    # steps, scale_by_std=False: centred only: 2 - 0.5 = 1.5, 0 - 0.5 = -0.5
    check(EpisodeReturn(scale_by_std=False, stats_over="steps").assign(rewards, groups), [[1.5], [-0.5] * 3])


def test_episode_return_scale_by_std_false():
    # returns: 1, 2+1 = 3, 0+0 = 0 -> mean 4/3; centred: 1 - 4/3 = -1/3, 3 - 4/3 = 5/3, 0 - 4/3 = -4/3
    rewards, groups = [R(1), R(2, 1), R(0, 0)], G(0, 0, 0)
    check(EpisodeReturn(scale_by_std=False).assign(rewards, groups), [[-1 / 3], [5 / 3] * 2, [-4 / 3] * 2])
    # with std: var = (1/9 + 25/9 + 16/9) / 3 = 42/27 = 1.555556, std 1.247219
    #   -0.333333 / 1.247219 = -0.267261, 1.666667 / 1.247219 = 1.336306, -1.333333 / 1.247219 = -1.069045
    check(EpisodeReturn().assign(rewards, groups), [[-0.267261], [1.336306] * 2, [-1.069045] * 2])


def test_episode_return_one_episode_groups_and_empty_episode():
    # every group holds one episode -> all advantages 0; an episode with no steps -> empty tensor
    out = EpisodeReturn().assign([R(5, 1), R(), R(-1)], G(0, 1, 2))
    check(out, [[0, 0], [], [0]])


# ----- StepReward ------------------------------------------------------------------------------------
def test_step_reward_hand_computed():
    rewards = [R(0, 2, 0), R(2), R(5, 1), R(1, 1), R(1)]
    groups = G(0, 0, 1, 2, 2)
    # group 0: rows [0, 2, 0, 2]: mean 1, std 1 -> [-1, 1, -1], [1] (equal returns 2 and 2, yet step credit)
    # group 1: one episode, rows [5, 1]: mean 3, std 2 -> [1, -1] (statistics over steps, not episodes)
    # group 2: rows [1, 1, 1] all equal -> 0
    check(StepReward().assign(rewards, groups), [[-1, 1, -1], [1], [1, -1], [0, 0], [0]])
    # scale_by_std=False: centred only: group 0 [-1, 1, -1], [1]; group 1: 5-3, 1-3
    check(StepReward(scale_by_std=False).assign(rewards, groups), [[-1, 1, -1], [1], [2, -2], [0, 0], [0]])
    # samplers still see the group-normalised return: group 0 returns [2, 2] -> 0; group 1 single -> 0;
    # group 2 returns [1+1, 1] = [2, 1]: mean 1.5, std 0.5 -> [1, -1]
    vec(StepReward().episode_advantages(rewards, groups), [0, 0, 0, 1, -1])


# ----- DiscountedReturn ------------------------------------------------------------------------------
def test_discounted_return_hand_computed():
    rewards, groups = [R(0, 0, 4), R(1)], G(0, 0)
    # gamma 0.5: episode 0 G = [0.5*(0.5*4), 0.5*4, 4] = [1, 2, 4]; episode 1 G = [1]
    # rows [1, 2, 4, 1]: mean 2, centred [-1, 0, 2, -1], var (1 + 0 + 4 + 1) / 4 = 1.5, std 1.224745
    #   -1 / 1.224745 = -0.816497, 2 / 1.224745 = 1.632993
    check(DiscountedReturn(gamma=0.5).assign(rewards, groups), [[-0.816497, 0, 1.632993], [-0.816497]])
    check(DiscountedReturn(gamma=0.5, scale_by_std=False).assign(rewards, groups), [[-1, 0, 2], [-1]])
    # gamma 1: G = [4, 4, 4], [1]; rows mean 13/4 = 3.25 -> [0.75, 0.75, 0.75], [-2.25]
    check(DiscountedReturn(gamma=1.0, scale_by_std=False).assign(rewards, groups), [[0.75] * 3, [-2.25]])


def test_discounted_return_gamma_zero_is_step_reward():
    rewards, groups = [R(0, 2, 0), R(2), R(5, 1)], G(0, 0, 1)
    check(DiscountedReturn(gamma=0.0).assign(rewards, groups), [[-1, 1, -1], [1], [1, -1]])


def test_discounted_return_multiple_groups_truncated():
    # group 0: a truncated episode [1] and a full one [0, 1]; gamma 0.5: G = [1] and [0.5, 1]
    #   rows [1, 0.5, 1]: mean 2.5/3 = 0.833333 -> [0.166667], [-0.333333, 0.166667]
    # group 1: one episode [1, 1]: G = [1.5, 1] -> mean 1.25 -> [0.25, -0.25]
    out = DiscountedReturn(gamma=0.5, scale_by_std=False).assign([R(1), R(0, 1), R(1, 1)], G(0, 0, 1))
    check(out, [[0.166667], [-0.333333, 0.166667], [0.25, -0.25]])


# ----- TerminalOnly ------------------------------------------------------------------------------------
def test_terminal_only_hand_computed():
    rewards = [R(0, 0, 0), R(1, 1), R(), R(4, 0), R(4)]
    groups = G(0, 0, 0, 1, 1)
    # group 0: returns [0, 2, 0] (empty episode returns 0): mean 2/3, std sqrt((4/9+16/9+4/9)/3) = 0.942809
    #   A = [-0.666667, 1.333333, -0.666667] / 0.942809 = [-0.707107, 1.414214, -0.707107]; last step only
    # group 1: returns [4, 4] -> 0
    out = TerminalOnly().assign(rewards, groups)
    check(out, [[0, 0, -0.707107], [0, 1.414214], [], [0, 0], [0]])
    # scale_by_std=False: [-2/3, 4/3]
    out = TerminalOnly(scale_by_std=False).assign(rewards, groups)
    check(out, [[0, 0, -2 / 3], [0, 4 / 3], [], [0, 0], [0]])


def test_terminal_only_one_episode_group():
    check(TerminalOnly().assign([R(1, 2, 3)], G(0)), [[0, 0, 0]])


# ----- AnchorState -------------------------------------------------------------------------------------
ANCHOR_REWARDS = [R(0, 0, 1), R(0, 0), R(3)]
ANCHOR_GROUPS = G(0, 0, 1)
# both group-0 episodes start in "s0"; group 1 also sees "s0" but is another group, so no anchor with it
ANCHOR_OBS = [["s0", "a", "g"], ["s0", "b"], ["s0"]]


def test_anchor_state_hand_computed_without_std():
    # episode: group 0 returns [1, 0] -> mean 0.5 -> A = [0.5, -0.5]; group 1 single -> 0
    # step (gamma 0.5): G ep0 = [0.25, 0.5, 1], G ep1 = [0, 0], G ep2 = [3]
    #   anchor (0, "s0"): [0.25, 0] -> mean 0.125 -> [0.125, -0.125]; "a", "g", "b", (1, "s0"): singletons 0
    # weight 1: ep0 [0.5 + 0.125, 0.5, 0.5], ep1 [-0.5 - 0.125, -0.5], ep2 [0]
    a = AnchorState(weight=1.0, gamma=0.5, scale_by_std=False)
    check(a.assign(ANCHOR_REWARDS, ANCHOR_GROUPS, ANCHOR_OBS), [[0.625, 0.5, 0.5], [-0.625, -0.5], [0]])
    # weight 2: 0.5 + 2 * 0.125 = 0.75
    a = AnchorState(weight=2.0, gamma=0.5, scale_by_std=False)
    check(a.assign(ANCHOR_REWARDS, ANCHOR_GROUPS, ANCHOR_OBS), [[0.75, 0.5, 0.5], [-0.75, -0.5], [0]])
    # weight 0 is EpisodeReturn
    a = AnchorState(weight=0.0, gamma=0.5, scale_by_std=False)
    check(a.assign(ANCHOR_REWARDS, ANCHOR_GROUPS, ANCHOR_OBS), [[0.5] * 3, [-0.5] * 2, [0]])


def test_anchor_state_hand_computed_with_std():
    # episode: [1, 0] -> 0.5 / 0.5 = [1, -1]; anchor "s0": [0.25, 0] -> 0.125 / 0.125 = [1, -1]
    # ep0 [1 + 1, 1, 1], ep1 [-1 - 1, -1], ep2 [0]
    # (eps: 0.5 / (0.5 + 1e-6) + 0.125 / (0.125 + 1e-6) = 2 - 1e-5, hence the looser tolerance)
    a = AnchorState(weight=1.0, gamma=0.5)
    check(a.assign(ANCHOR_REWARDS, ANCHOR_GROUPS, ANCHOR_OBS), [[2, 1, 1], [-2, -1], [0]], tol=1e-4)


def test_anchor_state_default_gamma_and_revisited_state():
    # gamma 0.95 (default); ep0 obs [s0, x, s0] rewards [0, 0, 1]: G = [0.9025, 0.95, 1]
    #                       ep1 obs [s0, y]     rewards [0, 0]:    G = [0, 0]
    # anchor "s0" holds ep0 t0, ep0 t2 (revisit) and ep1 t0: [0.9025, 1, 0] -> mean 1.9025 / 3 = 0.634167
    #   centred: [0.268333, 0.365833, -0.634167]; "x", "y" singletons -> 0
    # episode (no std): returns [1, 0] -> [0.5, -0.5]
    rewards, groups, obs = [R(0, 0, 1), R(0, 0)], G(0, 0), [["s0", "x", "s0"], ["s0", "y"]]
    out = AnchorState(scale_by_std=False).assign(rewards, groups, obs)
    check(out, [[0.768333, 0.5, 0.865833], [-1.134167, -0.5]])


def test_anchor_state_needs_observations():
    with pytest.raises(ValueError, match="needs observations"):
        AnchorState().assign(ANCHOR_REWARDS, ANCHOR_GROUPS, None)
    with pytest.raises(ValueError, match="observation lists"):
        AnchorState().assign(ANCHOR_REWARDS, ANCHOR_GROUPS, ANCHOR_OBS[:2])
    with pytest.raises(ValueError, match="episode 1 has 2 rewards but 1 observations"):
        AnchorState().assign(ANCHOR_REWARDS, ANCHOR_GROUPS, [["s0", "a", "g"], ["s0"], ["s0"]])


# ----- LeaveOneOut -------------------------------------------------------------------------------------
def test_leave_one_out_hand_computed():
    rewards = [R(1), R(1, 1), R(3, 3), R(7, 0), R(2), R(2, 0)]
    groups = G(0, 0, 0, 1, 2, 2)
    # group 0: returns [1, 2, 6]:
    #   1 - (2 + 6) / 2 = -3;  2 - (1 + 6) / 2 = -1.5;  6 - (1 + 2) / 2 = 4.5
    # group 1: one episode -> 0;  group 2: returns [2, 2] -> 2 - 2 = 0
    out = LeaveOneOut().assign(rewards, groups)
    check(out, [[-3], [-1.5] * 2, [4.5] * 2, [0, 0], [0], [0, 0]])
    vec(LeaveOneOut().episode_advantages(rewards, groups), [-3, -1.5, 4.5, 0, 0, 0])
    # scale_by_std: std of [1, 2, 6] = sqrt((4 + 1 + 9) / 3) = 2.160247
    #   -3 / 2.160247 = -1.388730; -1.5 / 2.160247 = -0.694365; 4.5 / 2.160247 = 2.083095
    out = LeaveOneOut(scale_by_std=True).assign(rewards, groups)
    check(out, [[-1.388730], [-0.694365] * 2, [2.083095] * 2, [0, 0], [0], [0, 0]])


def test_leave_one_out_two_episodes():
    # returns [0, 1]: 0 - 1 = -1, 1 - 0 = 1
    check(LeaveOneOut().assign([R(0, 0, 0), R(1)], G(0, 0)), [[-1, -1, -1], [1]])


# ----- properties shared by every assigner -------------------------------------------------------------
@pytest.mark.parametrize("assigner", ALL_ASSIGNERS, ids=lambda a: type(a).__name__)
def test_zero_rewards_give_exact_zeros(assigner: CreditAssigner):
    rewards = [R(0, 0), R(0), R(0, 0, 0), R()]
    groups = G(0, 0, 1, 1)
    out = assigner.assign(rewards, groups, obs_like(rewards))
    check(out, [[0, 0], [0], [0, 0, 0], []], tol=0)
    vec(assigner.episode_advantages(rewards, groups), [0, 0, 0, 0], tol=0)


EPISODE_LEVEL = [a for a in ALL_ASSIGNERS if not isinstance(a, (StepReward, DiscountedReturn))]


@pytest.mark.parametrize("assigner", EPISODE_LEVEL, ids=lambda a: type(a).__name__)
def test_equal_returns_give_exact_zeros(assigner: CreditAssigner):
    # identical non-zero episodes: returns all equal (1.1) -> every advantage exactly 0, never NaN
    rewards = [R(1.0, 0.1) for _ in range(5)]
    groups = G(0, 0, 0, 0, 0)
    out = assigner.assign(rewards, groups, obs_like(rewards))
    check(out, [[0, 0]] * 5, tol=0)


@pytest.mark.parametrize("assigner", ALL_ASSIGNERS, ids=lambda a: type(a).__name__)
def test_shapes_follow_episode_lengths(assigner: CreditAssigner):
    rewards = [R(1, 0, 0, 1), R(0), R(), R(0.5, 0.5), R(-1, 2, 0)]
    groups = G(0, 0, 0, 1, 1)
    out = assigner.assign(rewards, groups, obs_like(rewards))
    assert [o.shape[0] for o in out] == [4, 1, 0, 2, 3]
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in out)
    assert assigner.episode_advantages(rewards, groups).shape == (5,)


def test_group_ids_shape_checked():
    with pytest.raises(ValueError, match="group_ids must have shape"):
        EpisodeReturn().assign([R(1), R(0)], G(0))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: EpisodeReturn(stats_over="rows"), "stats_over"),
        (lambda: TerminalOnly(stats_over="rows"), "stats_over"),
        (lambda: AnchorState(stats_over="rows"), "stats_over"),
        (lambda: DiscountedReturn(gamma=1.5), "gamma"),
        (lambda: DiscountedReturn(gamma=-0.1), "gamma"),
        (lambda: AnchorState(gamma=2.0), "gamma"),
        (lambda: AnchorState(weight=-1.0), "weight"),
        (lambda: AnchorState(weight=math.inf), "weight"),
        (lambda: StepReward(eps=-1.0), "eps"),
        (lambda: LeaveOneOut(eps=math.nan), "eps"),
        (lambda: EpisodeReturn(scale_by_std="yes"), "scale_by_std"),
    ],
)
def test_bad_constructor_values(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_length_neutral_episode_return_by_hand():
    # group 0: a survivor (8 steps, return 1) and a loser (2 steps, return -1): A = +1, -1 (population std 1),
    # mean length 5, so the survivor's steps carry 5/8 each and the loser's -5/2: each episode 5 in all, and
    # the group's step advantages sum to 0 (broadcast, they would sum to 8 - 2 = 6: a net push of +6).
    # group 1: lengths 3 and 3, returns 0 and 2: A = -1, +1, mean length 3: the plain broadcast values
    rewards = [torch.tensor([0.0] * 7 + [1.0]), torch.tensor([0.0, -1.0]), torch.zeros(3), torch.tensor([0.0, 0, 2])]
    groups = torch.tensor([0, 0, 1, 1])
    eps = 1e-6
    out = EpisodeReturn(length_neutral=True).assign(rewards, groups)
    a = 1 / (1 + eps)
    assert [t.numel() for t in out] == [8, 2, 3, 3]
    assert torch.allclose(out[0], torch.full((8,), a * 5 / 8)) and torch.allclose(out[1], torch.full((2,), -a * 5 / 2))
    assert torch.allclose(out[2], torch.full((3,), -a)) and torch.allclose(out[3], torch.full((3,), a))
    assert abs(float(out[0].sum() + out[1].sum())) < 1e-6
    plain = EpisodeReturn().assign(rewards, groups)
    assert float(plain[0].sum() + plain[1].sum()) == pytest.approx(6 * a)
    from msgrpo.errors import ConfigError

    with pytest.raises(ConfigError, match="length_neutral must be true or false"):
        EpisodeReturn(length_neutral="yes")
    with pytest.raises(ConfigError, match="length_neutral needs stats_over: episodes"):
        EpisodeReturn(length_neutral=True, stats_over="steps")
    from msgrpo.components.credit import TerminalOnly

    with pytest.raises(ConfigError, match="TerminalOnly: length_neutral needs"):
        TerminalOnly(length_neutral=True)
