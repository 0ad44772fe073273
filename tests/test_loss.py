"""MSGRPOLoss against hand-computed numbers."""

import math

import pytest
import torch

from msgrpo.errors import ConfigError
from msgrpo.loss import MSGRPOLoss


def _lp(x):
    return torch.log(torch.tensor(x))


def test_ratio_and_clipping_by_hand():
    # Two samples, two tokens each. Ratios: sample 0 -> [1.5, 0.5], sample 1 -> [1.1, 0.7]
    old = torch.zeros(2, 2)
    new = _lp([[1.5, 0.5], [1.1, 0.7]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.ones(2, 2)
    out = MSGRPOLoss(clip_eps=0.2)(new, old, adv, mask)
    # sample 0 (A=+1): min(1.5*1, 1.2*1)=1.2 ; min(0.5, 0.8)=0.5
    # sample 1 (A=-2): min(1.1*-2, 1.1*-2)=-2.2 ; min(0.7*-2=-1.4, 0.8*-2=-1.6)=-1.6
    # loss = -(1.2 + 0.5 - 2.2 - 1.6) / 4 = 0.525
    assert out.loss.item() == pytest.approx(0.525, abs=1e-6)
    # clipped terms active: token (0,0) (ratio>1.2, A>0) and (1,1) (ratio<0.8, A<0) -> 2/4
    assert out.clip_frac.item() == pytest.approx(0.5)
    # approx_kl = mean((r-1) - log r)
    expected = sum((r - 1) - math.log(r) for r in [1.5, 0.5, 1.1, 0.7]) / 4
    assert out.approx_kl.item() == pytest.approx(expected, rel=1e-5)
    assert out.kl.item() == 0.0


def test_mask_and_sequence_mean():
    old = torch.zeros(2, 3)
    new = torch.zeros(2, 3)  # ratio 1 -> per-token loss = -A
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    token = MSGRPOLoss(aggregation="token-mean")(new, old, adv, mask)
    # tokens: three of -2, one of +1 -> (-6 + 1) / 4 = -1.25
    assert token.loss.item() == pytest.approx(-1.25)
    seq = MSGRPOLoss(aggregation="sequence-mean")(new, old, adv, mask)
    # sequence means: -2 and +1 -> -0.5
    assert seq.loss.item() == pytest.approx(-0.5)


def test_external_normalisers_make_micro_batches_add_up():
    torch.manual_seed(0)
    new = torch.randn(4, 3)
    old = new + 0.1 * torch.randn(4, 3)
    adv = torch.randn(4)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]]).float()
    for agg in ("token-mean", "sequence-mean"):
        loss = MSGRPOLoss(aggregation=agg)
        whole = loss(new, old, adv, mask).loss
        n_tok, n_seq = int(mask.sum()), 4
        parts = sum(
            loss(
                new[i : i + 2],
                old[i : i + 2],
                adv[i : i + 2],
                mask[i : i + 2],
                num_tokens=n_tok,
                num_sequences=n_seq,
            ).loss
            for i in (0, 2)
        )
        assert parts.item() == pytest.approx(whole.item(), rel=1e-6)


def test_k3_kl_by_hand():
    old = torch.zeros(1, 1)
    new = _lp([[0.5]])
    ref = _lp([[0.25]])
    out = MSGRPOLoss(kl_coef=0.1)(new, new.clone(), torch.tensor([0.0]), torch.ones(1, 1), ref)
    # delta = log(0.25) - log(0.5) = -log 2 ; k3 = e^delta - delta - 1 = 0.5 + log 2 - 1
    k3 = 0.5 + math.log(2) - 1
    assert out.kl.item() == pytest.approx(k3, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.1 * k3, rel=1e-6)
    del old


@pytest.mark.parametrize(
    ("ratio", "adv", "loss", "grad", "clipped"),
    [
        # clip range [1 - 0.2, 1 + 0.3] = [0.8, 1.3]; loss = -min(r A, clip(r) A); d loss / d logp = -r A or 0
        (1.25, 1.0, -1.25, -1.25, False),  # A > 0 inside the upper clip (a symmetric 0.2 would clip it)
        (1.35, 1.0, -1.3, 0.0, True),  # A > 0 above 1.3: the clipped term, no gradient
        (0.7, 1.0, -0.7, -0.7, False),  # A > 0 below 0.8: the lower clip does not bind for A > 0
        (0.85, -1.0, 0.85, 0.85, False),  # A < 0 inside the lower clip
        (0.75, -1.0, 0.8, 0.0, True),  # A < 0 below 0.8: clipped, no gradient
        (1.35, -1.0, 1.35, 1.35, False),  # A < 0 above 1.3: the upper clip does not bind for A < 0
    ],
)
def test_asymmetric_clip_both_sides_of_both_clips(ratio, adv, loss, grad, clipped):
    new = _lp([[ratio]]).requires_grad_(True)
    out = MSGRPOLoss(clip_eps=0.2, clip_eps_high=0.3)(new, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(loss, abs=1e-6)
    assert new.grad.item() == pytest.approx(grad, abs=1e-6)
    assert out.clip_frac.item() == float(clipped)


def test_kl_needs_reference_and_bad_values():
    with pytest.raises(ValueError, match="ref_logprobs"):
        MSGRPOLoss(kl_coef=0.1)(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1))
    with pytest.raises(ConfigError, match="clip"):
        MSGRPOLoss(clip_eps=0.0)
    with pytest.raises(ConfigError, match="aggregation"):
        MSGRPOLoss(aggregation="mean")


def test_entropy_bonus_by_hand():
    # ratio 1 and A = 0: the loss is only the entropy bonus. Token entropies 0.5 and 1.5, token mean 1.0.
    new = torch.zeros(1, 2)
    entropy = torch.tensor([[0.5, 1.5]], requires_grad=True)
    out = MSGRPOLoss(entropy_coef=0.1)(new, new.clone(), torch.tensor([0.0]), torch.ones(1, 2), entropy=entropy)
    assert out.loss.item() == pytest.approx(-0.1 * 1.0)
    out.loss.backward()
    # d loss / d H_t = -coef / num_tokens = -0.05 for both tokens
    assert entropy.grad.flatten().tolist() == pytest.approx([-0.05, -0.05])
    assert out.policy_loss.item() == 0.0  # the bonus is not part of the policy term
    off = MSGRPOLoss()(new, new.clone(), torch.tensor([0.0]), torch.ones(1, 2), entropy=entropy)
    assert off.loss.item() == 0.0  # coefficient 0: entropy is ignored


def test_entropy_target_is_a_floor_by_hand():
    # Token entropies 0.2 and 1.5 with a 0.5-nat target: the bonus counts min(H, 0.5) = 0.2 and 0.5, token
    # mean 0.35; only the token below the floor gets a gradient (-coef / num_tokens = -0.05).
    new = torch.zeros(1, 2)
    entropy = torch.tensor([[0.2, 1.5]], requires_grad=True)
    loss = MSGRPOLoss(entropy_coef=0.1, entropy_target=0.5)
    out = loss(new, new.clone(), torch.tensor([0.0]), torch.ones(1, 2), entropy=entropy)
    assert out.loss.item() == pytest.approx(-0.1 * 0.35)
    out.loss.backward()
    assert entropy.grad.flatten().tolist() == pytest.approx([-0.05, 0.0])
    # a padded token below the floor gets nothing either
    entropy.grad = None
    out = loss(new, new.clone(), torch.tensor([0.0]), torch.tensor([[1.0, 0.0]]), entropy=entropy)
    assert out.loss.item() == pytest.approx(-0.1 * 0.2)
    out.loss.backward()
    assert entropy.grad.flatten().tolist() == pytest.approx([-0.1, 0.0])


def test_entropy_target_needs_a_bonus_and_a_positive_value():
    with pytest.raises(ConfigError, match="entropy_target.*entropy_coef"):
        MSGRPOLoss(entropy_target=0.5)
    with pytest.raises(ConfigError, match="entropy_target"):
        MSGRPOLoss(entropy_coef=0.1, entropy_target=0.0)


def test_entropy_bonus_needs_entropy_and_is_non_negative():
    with pytest.raises(ValueError, match="entropy"):
        MSGRPOLoss(entropy_coef=0.1)(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1))
    with pytest.raises(ConfigError, match="entropy_coef"):
        MSGRPOLoss(entropy_coef=-0.1)


def test_padding_holding_inf_or_nan_never_reaches_the_loss():
    # a padded position may hold anything (-inf: the pad id outside top-k / allowed tokens; NaN): it is
    # selected away, so the loss and the gradient are those of the real tokens alone
    new = torch.tensor([[math.log(1.5), float("-inf")], [math.log(0.5), float("nan")]], requires_grad=True)
    old = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    ref = torch.tensor([[0.0, float("-inf")], [0.0, float("inf")]])
    for kl in (0.0, 0.5):
        out = MSGRPOLoss(clip_eps=0.2, kl_coef=kl)(new, old, adv, mask, ref_logprobs=ref)
        # real tokens: A=+1, r=1.5 -> clipped 1.2; A=-1, r=0.5 -> min(-0.5, -0.8) = -0.8 -> loss -(1.2-0.8)/2
        k3 = sum(math.exp(-math.log(r)) + math.log(r) - 1 for r in (1.5, 0.5)) / 2  # d = ref - logp = -log r
        assert out.loss.item() == pytest.approx(-0.2 + kl * k3, abs=1e-6)
        (grad,) = torch.autograd.grad(out.loss, new)
        assert torch.isfinite(grad).all() and (grad[:, 1] == 0).all()
        assert all(math.isfinite(float(v)) for v in (out.kl, out.approx_kl, out.clip_frac, out.ratio_mean))


def test_a_token_that_left_the_truncated_support_is_bounded_and_counted():
    # after an update, a sampled token can fall outside the current top-k: logp = -inf under the sampling
    # distribution. Its ratio is e^-20 (no gradient: clipped or zero), it counts in approx_kl with the bounded
    # log-ratio -20 (a large move, not none), and support_exit_frac counts it; the KL uses the untruncated
    # log-probs, which stay finite.
    new = torch.tensor([[float("-inf"), math.log(1.1)]], requires_grad=True)
    full = torch.tensor([[math.log(0.01), math.log(1.1)]], requires_grad=True)
    old = torch.zeros(1, 2)
    ref = torch.zeros(1, 2)
    for adv in (1.0, -1.0):
        out = MSGRPOLoss(kl_coef=0.1)(new, old, torch.tensor([adv]), torch.ones(1, 2), ref, full_logprobs=full)
        assert torch.isfinite(out.loss)
        assert out.support_exit_frac.item() == pytest.approx(0.5)
        left = math.exp(-20) - 1 + 20  # (r - 1) - log r at log r = -20
        assert out.approx_kl.item() == pytest.approx((left + (1.1 - 1) - math.log(1.1)) / 2, rel=1e-5)
        g_new, g_full = torch.autograd.grad(out.loss, (new, full))
        assert g_new[0, 0] == 0 and torch.isfinite(g_new).all()
        # k3 on the untruncated token: d = 0 - log 0.01; d/dlogp of (e^d - d - 1) = 1 - e^d, times kl / 2
        assert g_full[0, 0].item() == pytest.approx(0.1 * (1 - 100.0) / 2, rel=1e-5)


def test_max_abs_log_ratio_is_zero_on_policy():
    lp = torch.log(torch.tensor([[0.3, 0.2], [0.6, 0.1]]))
    out = MSGRPOLoss()(lp, lp.clone(), torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert out.max_abs_log_ratio.item() == 0.0 and out.ratio_mean.item() == 1.0
    out = MSGRPOLoss()(lp + 0.3, lp, torch.tensor([1.0, -1.0]), torch.ones(2, 2))
    assert out.max_abs_log_ratio.item() == pytest.approx(0.3, abs=1e-6)
