"""The sampling distribution shared by generation and scoring: hand-checked log-probs, padding safety."""

import math

import pytest
import torch

from msgrpo.errors import ConfigError
from msgrpo.lm.distribution import SamplingDistribution, score_tokens, truncate


def test_truncate_top_k_and_nucleus_by_hand():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(truncate(scores, 2, 1.0)[0, 2:]).all() and torch.isfinite(truncate(scores, 2, 1.0)[0, :2]).all()
    # nucleus 0.7: 0.5 < 0.7, 0.5 + 0.3 crosses it -> keep the first two
    kept = torch.isfinite(truncate(scores, 0, 0.7))[0].tolist()
    assert kept == [True, True, False, False]


def test_sampling_and_full_logprobs_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    dist = SamplingDistribution(temperature=2.0, top_k=2, allowed_ids=[0, 1, 3])
    full = dist.full_logprobs(logits)[0]
    # allowed {0, 1, 3}, logits / 2 = [1, 0.5, -, -0.5]
    z = math.log(math.exp(1) + math.exp(0.5) + math.exp(-0.5))
    assert full.tolist() == pytest.approx([1 - z, 0.5 - z, float("-inf"), -0.5 - z])
    sampling = dist.sampling_logprobs(logits)[0]  # top-2 of the allowed: {0, 1}
    z2 = math.log(math.exp(1) + math.exp(0.5))
    assert sampling.tolist() == pytest.approx([1 - z2, 0.5 - z2, float("-inf"), float("-inf")])


def test_score_tokens_padding_is_exactly_zero_with_finite_gradient():
    logits = torch.randn(2, 3, 6, requires_grad=True)
    dist = SamplingDistribution(top_k=2, allowed_ids=[0, 1, 2])
    targets = torch.tensor([[0, 5, 5], [1, 2, 5]])  # 5: the pad id, outside every support
    mask = torch.tensor([[1, 0, 0], [1, 1, 0]])
    s = score_tokens(dist, logits, targets, mask, with_entropy=True, entropy_grad=True)
    assert (s.logprobs[mask == 0] == 0).all() and (s.full_logprobs[mask == 0] == 0).all()
    assert (s.entropy[mask == 0] == 0).all() and torch.isfinite(s.entropy).all()
    (s.logprobs.sum() + s.full_logprobs.sum() + s.entropy.sum()).backward()
    assert torch.isfinite(logits.grad).all()


def test_bad_settings_name_the_setting():
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        SamplingDistribution(temperature=0)
    with pytest.raises(ConfigError, match=r"top_p must be in \(0, 1\]"):
        SamplingDistribution(top_p=1.5)
    with pytest.raises(ConfigError, match="top_k must be >= 0"):
        SamplingDistribution(top_k=-1)


def test_exploration_floor_by_hand():
    # allowed {0, 1, 3}, logits [2, 0, -, -1]: softmax p = [0.8438, 0.1142, 0.0420]; floor 0.3 mixes in 0.1 each
    dist = SamplingDistribution(allowed_ids=[0, 1, 3], floor=0.3)
    probs = dist.sampling_logprobs(torch.tensor([[2.0, 0.0, 5.0, -1.0]]))[0].exp()
    p = torch.tensor([2.0, 0.0, -1.0]).softmax(-1)
    assert torch.allclose(probs[[0, 1, 3]], 0.7 * p + 0.1) and probs[2] == 0
    assert float(probs.min(0).values) == 0 and float(probs[[0, 1, 3]].min()) >= 0.1
    assert torch.allclose(dist.full_logprobs(torch.tensor([[2.0, 0.0, 5.0, -1.0]]))[0].exp(), probs)
    with pytest.raises(ConfigError, match="exploration_floor"):
        SamplingDistribution(floor=0.2)  # nothing to spread over
    with pytest.raises(ConfigError, match="exploration_floor"):
        SamplingDistribution(allowed_ids=[0], floor=1.0)
