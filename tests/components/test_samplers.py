"""Episode samplers: hand-computed selections, seeded draws and count validation.

Frequency checks draw from a seeded generator, so they are deterministic; their tolerances are also
about ten standard errors wide, so a change of seed cannot make them flake.
"""

from __future__ import annotations

import pytest
import torch

from msgrpo.components.samplers import (
    AbsoluteAdvantageWeighted,
    All,
    GroupVarianceFilter,
    TopAbsAdvantage,
    Uniform,
    inclusion_probabilities,
)
from msgrpo.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(advantages: list[float], group_ids: list[int] | None = None, returns: list[float] | None = None):
    adv = torch.tensor(advantages, dtype=torch.float32)
    groups = torch.tensor(group_ids if group_ids is not None else [0] * len(advantages))
    rets = torch.tensor(returns, dtype=torch.float32) if returns is not None else adv.clone()
    return adv, rets, groups


# index:     0    1    2     3    4    5
INFORMATIVE = [0.0, 1.5, 0.0, -0.5, 2.0, 0.0]  # |A| > 0 at 1, 3, 4 only


# ----- All and Uniform -----------------------------------------------------------------------------------
def test_all_returns_every_index():
    assert All().sample(*inputs([0.0, 1.0, -1.0]), gen()).tolist() == [0, 1, 2]


def test_uniform_without_replacement_distinct_and_deterministic():
    s = Uniform(num_episodes=4)
    a = s.sample(*inputs(INFORMATIVE), gen(3))
    b = s.sample(*inputs(INFORMATIVE), gen(3))
    assert torch.equal(a, b)
    assert len(set(a.tolist())) == 4 and all(0 <= i < 6 for i in a.tolist())


def test_uniform_with_replacement_frequencies():
    # 4 episodes, 40000 draws: each p = 1/4; standard error sqrt(0.25 * 0.75 / 40000) = 0.0022
    idx = Uniform(num_episodes=40000, replacement=True).sample(*inputs([0.0, 1.0, 2.0, 3.0]), gen(1))
    freq = torch.bincount(idx, minlength=4).double() / 40000
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02)


# ----- AbsoluteAdvantageWeighted -----------------------------------------------------------------------
def test_abs_adv_never_draws_zero_advantage_while_informative_remain():
    # 3 informative episodes (1, 3, 4): drawing 3 without replacement must take exactly those, any seed
    s = AbsoluteAdvantageWeighted(num_episodes=3)
    for seed in range(50):
        assert sorted(s.sample(*inputs(INFORMATIVE), gen(seed)).tolist()) == [1, 3, 4]
    # drawing 2: two distinct informative ones
    s = AbsoluteAdvantageWeighted(num_episodes=2)
    for seed in range(50):
        got = s.sample(*inputs(INFORMATIVE), gen(seed)).tolist()
        assert len(set(got)) == 2 and set(got) <= {1, 3, 4}


def test_abs_adv_takes_only_informative_episodes_when_fewer_than_asked():
    # 5 asked of 6 episodes, 3 informative: exactly 1, 3, 4 (no zero-advantage filler), in random order
    s = AbsoluteAdvantageWeighted(num_episodes=5)
    orders = set()
    for seed in range(30):
        got = s.sample(*inputs(INFORMATIVE), gen(seed)).tolist()
        assert sorted(got) == [1, 3, 4]
        orders.add(tuple(got))
    assert len(orders) > 1
    for scheme in ("successive", "proportional"):
        got = AbsoluteAdvantageWeighted(num_episodes=5, scheme=scheme).sample(*inputs(INFORMATIVE), gen(1))
        assert sorted(got.tolist()) == [1, 3, 4]


def test_abs_adv_fill_tops_up_with_zero_advantage_episodes():
    s = AbsoluteAdvantageWeighted(num_episodes=5, fill=True)
    seen_fill = set()
    for seed in range(30):
        got = s.sample(*inputs(INFORMATIVE), gen(seed)).tolist()
        assert sorted(got[:3]) == [1, 3, 4]
        assert len(set(got)) == 5 and set(got[3:]) <= {0, 2, 5}
        seen_fill.add(tuple(sorted(got[3:])))
    assert len(seen_fill) > 1  # the fill-up is random, not always the same two
    got = AbsoluteAdvantageWeighted(num_episodes=6, fill=True).sample(*inputs(INFORMATIVE), gen(0)).tolist()
    assert sorted(got) == [0, 1, 2, 3, 4, 5]


def test_abs_adv_all_zero_falls_back_to_uniform():
    zeros = [0.0] * 4
    # without replacement: 4 of 4 is a permutation; 2 of 4 are distinct
    got = AbsoluteAdvantageWeighted(num_episodes=4).sample(*inputs(zeros), gen(0)).tolist()
    assert sorted(got) == [0, 1, 2, 3]
    # 2 of 4, 20000 times: each episode is included with probability 1/2 (standard error 0.0035)
    counts = torch.zeros(4)
    for seed in range(20000):
        got = AbsoluteAdvantageWeighted(num_episodes=2).sample(*inputs(zeros), gen(seed))
        assert got.unique().numel() == 2
        counts[got] += 1
    assert torch.allclose(counts / 20000, torch.full((4,), 0.5), atol=0.035)
    # with replacement: 40000 uniform draws; p = 1/4 each, standard error 0.0022
    idx = AbsoluteAdvantageWeighted(num_episodes=40000, scheme="replacement").sample(*inputs(zeros), gen(2))
    freq = torch.bincount(idx, minlength=4).double() / 40000
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02)


def test_abs_adv_with_replacement_frequencies_proportional_to_abs_advantage():
    # |A| = [1, 2, 3, 0] -> p = [1/6, 2/6, 3/6, 0] = [0.1667, 0.3333, 0.5, 0]
    # 60000 draws: standard error <= sqrt(0.25 / 60000) = 0.002, tolerance 0.02 is 10 of them
    s = AbsoluteAdvantageWeighted(num_episodes=60000, scheme="replacement")
    idx = s.sample(*inputs([1.0, -2.0, 3.0, 0.0]), gen(7))
    counts = torch.bincount(idx, minlength=4)
    assert counts[3] == 0  # zero advantage: never drawn
    freq = counts.double() / 60000
    expected = torch.tensor([1 / 6, 2 / 6, 3 / 6, 0.0], dtype=torch.float64)
    assert torch.allclose(freq, expected, atol=0.02), freq


def test_inclusion_probabilities_by_hand():
    # 2 of |A| = [1, 2, 3, 4, 0]: pi = 2 |A| / 10 = [0.2, 0.4, 0.6, 0.8, 0]
    pi = inclusion_probabilities(torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0]), 2)
    assert torch.allclose(pi, torch.tensor([0.2, 0.4, 0.6, 0.8, 0.0], dtype=torch.float64))
    # 2 of |A| = [8, 1, 1, 1, 1]: 2 * 8 / 12 > 1, so episode 0 is certain and the other 4 share the
    # remaining 1 equally: [1, 0.25, 0.25, 0.25, 0.25]
    pi = inclusion_probabilities(torch.tensor([8.0, 1.0, 1.0, 1.0, 1.0]), 2)
    assert torch.allclose(pi, torch.tensor([1.0, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64))
    # capping can cascade: 3 of [10, 9, 1, 1]: 10 and 9 certain, then 1 left over 2 equal -> 0.5 each
    pi = inclusion_probabilities(torch.tensor([10.0, 9.0, 1.0, 1.0]), 3)
    assert torch.allclose(pi, torch.tensor([1.0, 1.0, 0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize(
    ("abs_adv", "k", "expected"),
    [
        ([1.0, -2.0, 3.0, 4.0, 0.0], 2, [0.2, 0.4, 0.6, 0.8, 0.0]),
        ([8.0, 1.0, -1.0, 1.0, 1.0], 2, [1.0, 0.25, 0.25, 0.25, 0.25]),
    ],
)
def test_abs_adv_proportional_draw_has_those_inclusion_probabilities(abs_adv, k, expected):
    # the whole draw, 20000 times: always k distinct episodes with |A| > 0; each episode's inclusion
    # frequency is its hand-computed probability (standard error <= 0.0035, tolerance 10 of them)
    s = AbsoluteAdvantageWeighted(num_episodes=k)
    counts = torch.zeros(len(abs_adv), dtype=torch.float64)
    for seed in range(20000):
        got = s.sample(*inputs(abs_adv), gen(seed))
        assert got.numel() == k and got.unique().numel() == k
        assert all(abs_adv[i] != 0 for i in got.tolist())
        counts[got] += 1
    assert torch.allclose(counts / 20000, torch.tensor(expected, dtype=torch.float64), atol=0.035), counts / 20000


def test_successive_sampling_is_far_from_proportional_inclusion():
    # one episode with |A| = 8 among 24 with |A| = 1, 3 drawn: proportional inclusion gives it
    # 3 * 8 / 32 = 0.75 against 3 / 32 = 0.094 for the others (ratio 8); successive draws include it
    # only about 5.9x as often as each of the others (by hand: P(in) = 1 - P(out on all three draws))
    abs_adv = [8.0] + [1.0] * 24
    ratios = {}
    for scheme in ("proportional", "successive"):
        s = AbsoluteAdvantageWeighted(num_episodes=3, scheme=scheme)
        counts = torch.zeros(25)
        for seed in range(6000):
            counts[s.sample(*inputs(abs_adv), gen(seed))] += 1
        ratios[scheme] = float(counts[0] / counts[1:].mean())
    assert 7.0 < ratios["proportional"] < 9.0
    assert ratios["successive"] < 6.5


def test_abs_adv_without_replacement_prefers_large_abs_advantage():
    # |A| = [0.1, 10]: drawing 1 of 2, episode 1 has p = 10 / 10.1 = 0.99; over 200 seeds it wins > 150
    s = AbsoluteAdvantageWeighted(num_episodes=1)
    wins = sum(int(s.sample(*inputs([0.1, -10.0]), gen(seed))[0]) == 1 for seed in range(200))
    assert wins > 150


def test_abs_adv_determinism_same_seed():
    s = AbsoluteAdvantageWeighted(num_episodes=3)
    adv = [0.3, -1.2, 0.7, 0.0, 2.5, -0.4, 0.9, 0.0]
    a = s.sample(*inputs(adv), gen(11))
    b = s.sample(*inputs(adv), gen(11))
    assert torch.equal(a, b)
    # different seeds do not always agree (the draw is random)
    outs = {tuple(s.sample(*inputs(adv), gen(seed)).tolist()) for seed in range(20)}
    assert len(outs) > 1


def test_abs_adv_more_than_available_without_replacement_is_a_config_error():
    s = AbsoluteAdvantageWeighted(num_episodes=7)
    with pytest.raises(ConfigError, match="num_episodes=7 exceeds the 6 episodes.*scheme=replacement"):
        s.validate(6)
    s.validate(7)
    # at sampling time (fewer healthy episodes than configured, e.g. env errors) it takes what there is
    assert sorted(s.sample(*inputs([1.0] * 6), gen()).tolist()) == list(range(6))
    # with replacement 7 of 6 is fine, and never picks a zero-|A| episode
    got = AbsoluteAdvantageWeighted(num_episodes=7, scheme="replacement").sample(*inputs(INFORMATIVE), gen())
    assert got.numel() == 7 and set(got.tolist()) <= {1, 3, 4}
    with pytest.raises(ConfigError, match="scheme must be one of"):
        AbsoluteAdvantageWeighted(scheme="weighted")


def test_abs_adv_rejects_nan():
    with pytest.raises(ValueError, match="NaN or inf"):
        AbsoluteAdvantageWeighted(num_episodes=1).sample(*inputs([float("nan"), 1.0]), gen())


# ----- TopAbsAdvantage -----------------------------------------------------------------------------------
def test_top_abs_advantage_hand_computed():
    # |A| = [0.5, 2, 2, 0, 1]: order 1 (2), 2 (2, tie -> lower index after 1), 4 (1), 0 (0.5), 3 (0)
    adv = [0.5, -2.0, 2.0, 0.0, 1.0]
    assert TopAbsAdvantage(num_episodes=3).sample(*inputs(adv), gen()).tolist() == [1, 2, 4]
    assert TopAbsAdvantage(num_episodes=5).sample(*inputs(adv), gen()).tolist() == [1, 2, 4, 0, 3]
    assert TopAbsAdvantage(num_episodes=1).sample(*inputs(adv), gen()).tolist() == [1]


def test_top_abs_advantage_ties_and_zero_by_index_and_ignores_generator():
    # all zero: stable order 0, 1, 2; whatever the seed
    for seed in range(5):
        assert TopAbsAdvantage(num_episodes=3).sample(*inputs([0.0] * 4), gen(seed)).tolist() == [0, 1, 2]


def test_top_abs_advantage_count_errors():
    with pytest.raises(ConfigError, match="num_episodes=6 exceeds the 5 episodes"):
        TopAbsAdvantage(num_episodes=6).validate(5)
    assert TopAbsAdvantage(num_episodes=6).sample(*inputs([1.0] * 5), gen()).tolist() == [0, 1, 2, 3, 4]


# ----- GroupVarianceFilter -------------------------------------------------------------------------------
# episodes:  0  1 | 2  3 | 4  5  6 | 7  8 | 9  10
# groups:    0  0 | 1  1 | 2  2  2 | 3  3 | 4  4
# returns:   0  0 | 0  2 | 1  1  1 | 0  4 | 1  3
# variance:   0   |  1   |    0    |  4   |  1     (pop. var: [0,2] -> 1; [0,4] -> 4; [1,3] -> 1)
# ranking: g3 (4), g1 (1), g4 (1, tie with g1 -> higher id later), g0 (0), g2 (0): zero variance last
GV_GROUPS = [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
GV_RETURNS = [0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 1.0, 0.0, 4.0, 1.0, 3.0]


def gv(sampler: GroupVarianceFilter, seed: int = 0) -> list[int]:
    adv = torch.zeros(len(GV_GROUPS))  # the filter ranks by returns, not advantages
    return sampler.sample(adv, torch.tensor(GV_RETURNS), torch.tensor(GV_GROUPS), gen(seed)).tolist()


def test_group_variance_filter_keep_fraction():
    # 5 groups x 0.5 = 2.5 -> floor 2 -> g3, g1 -> episodes 2, 3, 7, 8 (index order)
    assert gv(GroupVarianceFilter()) == [2, 3, 7, 8]
    # 5 x 0.6 = 3 -> g3, g1, g4
    assert gv(GroupVarianceFilter(keep_fraction=0.6)) == [2, 3, 7, 8, 9, 10]
    # 5 x 0.1 = 0.5 -> floor 0 -> at least 1 group: g3
    assert gv(GroupVarianceFilter(keep_fraction=0.1)) == [7, 8]
    # 5 x 1.0 = 5: every episode
    assert gv(GroupVarianceFilter(keep_fraction=1.0)) == list(range(11))


def test_group_variance_filter_keep_groups_and_zero_variance_last():
    assert gv(GroupVarianceFilter(keep_groups=3)) == [2, 3, 7, 8, 9, 10]
    # 4th group: g0 (zero variance, lowest id among the zero-variance groups), never before g4
    assert gv(GroupVarianceFilter(keep_groups=4)) == [0, 1, 2, 3, 7, 8, 9, 10]
    # keep_groups overrides keep_fraction
    assert gv(GroupVarianceFilter(keep_fraction=1.0, keep_groups=1)) == [7, 8]
    # the generator plays no part
    assert gv(GroupVarianceFilter(keep_groups=2), seed=0) == gv(GroupVarianceFilter(keep_groups=2), seed=9)


def test_group_variance_filter_interleaved_ids_and_one_episode_groups():
    # group ids [1, 0, 1, 0, 2], returns [0, 5, 2, 5, 9]: g1 var 1; g0 [5, 5] var 0; g2 one episode var 0
    # keep 1: g1 -> episodes 0, 2; keep 2: g1 then g0 (zero variance, tie with g2 broken by id)
    adv, rets, groups = torch.zeros(5), torch.tensor([0.0, 5.0, 2.0, 5.0, 9.0]), torch.tensor([1, 0, 1, 0, 2])
    assert GroupVarianceFilter(keep_groups=1).sample(adv, rets, groups, gen()).tolist() == [0, 2]
    assert GroupVarianceFilter(keep_groups=2).sample(adv, rets, groups, gen()).tolist() == [0, 1, 2, 3]


def test_group_variance_filter_float_noise_counts_as_zero_variance():
    # g0: three copies of 0.1 (float mean not exact) must rank as zero variance, so after g1
    # g1 returns [0, 1e-3]: var (5e-4)^2 = 2.5e-7 > 0 -> ranked first
    rets = torch.tensor([0.1, 0.1, 0.1, 0.0, 1e-3], dtype=torch.float64)
    groups = torch.tensor([0, 0, 0, 1, 1])
    assert GroupVarianceFilter(keep_groups=1).sample(torch.zeros(5), rets, groups, gen()).tolist() == [3, 4]


def test_group_variance_filter_count_errors():
    assert gv(GroupVarianceFilter(keep_groups=6)) == list(range(11))  # fewer groups this rollout: all of them
    with pytest.raises(ConfigError, match="keep_groups=4 exceeds the 3 episodes"):
        GroupVarianceFilter(keep_groups=4).validate(3)
    GroupVarianceFilter(keep_groups=3).validate(3)
    GroupVarianceFilter(keep_fraction=0.25).validate(1)


# ----- constructor validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: Uniform(num_episodes=0), "num_episodes must be an integer >= 1"),
        (lambda: AbsoluteAdvantageWeighted(num_episodes=-2), "num_episodes must be an integer >= 1"),
        (lambda: AbsoluteAdvantageWeighted(num_episodes=2.5), "num_episodes must be an integer"),
        (lambda: TopAbsAdvantage(num_episodes=0), "num_episodes must be an integer >= 1"),
        (lambda: GroupVarianceFilter(keep_fraction=0.0), r"keep_fraction must be in \(0, 1\]"),
        (lambda: GroupVarianceFilter(keep_fraction=1.5), r"keep_fraction must be in \(0, 1\]"),
        (lambda: GroupVarianceFilter(keep_groups=0), "keep_groups must be an integer >= 1"),
    ],
)
def test_bad_constructor_values(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_mismatched_input_shapes_are_errors():
    adv, rets, groups = inputs([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="must all have shape"):
        AbsoluteAdvantageWeighted(num_episodes=1).sample(adv, rets[:2], groups, gen())


def test_abs_adv_importance_weights_by_hand():
    # 2 of |A| = [1, 2, 3, 4, 0]: pi = [0.2, 0.4, 0.6, 0.8, 0]; drawn [0, 3] -> 1 / pi = [5, 1.25],
    # normalised to mean 1: [1.6, 0.4]
    s = AbsoluteAdvantageWeighted(num_episodes=2, reweight=True)
    adv = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0])
    w = s.importance_weights(adv, torch.tensor([0, 3]))
    assert torch.allclose(w, torch.tensor([1.6, 0.4]))
    # with replacement: 1 / p per draw, p = |A| / 10 -> draws [3, 3, 1] -> [2.5, 2.5, 5] / (10/3)
    r = AbsoluteAdvantageWeighted(num_episodes=3, scheme="replacement", reweight=True)
    assert torch.allclose(r.importance_weights(adv, torch.tensor([3, 3, 1])), torch.tensor([0.75, 0.75, 1.5]))
    # off by default, and 1 when every informative episode is drawn anyway
    assert AbsoluteAdvantageWeighted(num_episodes=2).importance_weights(adv, torch.tensor([0, 3])) is None
    assert AbsoluteAdvantageWeighted(num_episodes=4, reweight=True).importance_weights(adv, torch.arange(4)) is None
    with pytest.raises(ConfigError, match="reweight needs scheme"):
        AbsoluteAdvantageWeighted(scheme="successive", reweight=True)


def test_reweighting_removes_the_bias_toward_large_abs_advantage():
    # a nearly solved group: 7 successes (A = +0.35) and one failure (A = -2.47); 4 of 8 drawn. The full
    # batch's advantages sum to 0 (the moves every episode shares get no push). Drawn by |A| alone, the
    # failure is always in and the draw's sum is about -1.8: the shared moves are pushed down. The
    # Horvitz-Thompson sum (each drawn A_i / pi_i) is 0 in expectation.
    signed = torch.tensor([0.35] * 7 + [-2.45])
    pi = inclusion_probabilities(signed.abs(), 4)
    assert pi[7] == 1.0
    s = AbsoluteAdvantageWeighted(num_episodes=4, reweight=True)
    plain, corrected = 0.0, 0.0
    for seed in range(4000):
        chosen = s.sample(signed.abs(), signed, torch.zeros(8, dtype=torch.long), gen(seed))
        plain += float(signed[chosen].sum())
        corrected += float((signed[chosen] / pi[chosen]).sum())
    assert plain / 4000 == pytest.approx(0.35 * 3 - 2.45, abs=0.01)  # three successes and the failure
    assert corrected / 4000 == pytest.approx(0.0, abs=0.05)
