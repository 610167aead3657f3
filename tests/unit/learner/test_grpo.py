"""GRPO math against hand-computed values, plus the invariants that make it safe to shard."""

import math

import pytest
import torch

from learner.grpo import (grpo_loss, group_advantages, informative_groups, kl_k3, truncated_completion_mask,
                          truncated_is_weights, warmup_factor)


def test_group_advantages_grpo_and_dr_grpo():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]])
    grpo = group_advantages(rewards, eps=0.0)
    # group 0: mean 0.5, population std 0.5; group 1: mean 2, std sqrt(0.5)
    assert torch.allclose(grpo[0], torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert torch.allclose(grpo[1], torch.tensor([1.0, -1.0, 0.0, 0.0]) / math.sqrt(0.5))
    dr = group_advantages(rewards, scale_by_std=False)
    assert torch.allclose(dr, torch.tensor([[0.5, -0.5, -0.5, 0.5], [1.0, -1.0, 0.0, 0.0]]))


def test_all_equal_groups_are_flagged_and_get_zero_advantage():
    rewards = torch.tensor([[6.5, 6.5, 6.5], [-1.0, 6.5, 1.0], [0.0, 0.0, 0.0]])
    assert informative_groups(rewards).tolist() == [False, True, False]
    assert torch.all(group_advantages(rewards)[0] == 0)


def test_kl_k3_hand_value_and_non_negative():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert kl_k3(lp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    x = torch.randn(1000)
    assert torch.all(kl_k3(x, x + torch.randn(1000)) >= 0) and torch.all(kl_k3(x, x) == 0)


def test_truncated_is_weights_cap_and_no_grad():
    old = torch.log(torch.tensor([0.6, 0.3])).requires_grad_()
    w = truncated_is_weights(old, torch.log(torch.tensor([0.2, 0.3])), cap=2.0)
    assert torch.allclose(w, torch.tensor([2.0, 1.0])) and not w.requires_grad


def test_truncated_completions_are_masked_out():
    mask = torch.ones(2, 3)
    assert truncated_completion_mask(mask, torch.tensor([True, False])).tolist() == [[0, 0, 0], [1, 1, 1]]


def test_clip_higher_hand_values():
    old = torch.zeros(1, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios 1.5 and 0.5
    # token 0 belongs to a positive-advantage sample, token 1 to a negative one: use two samples
    out = grpo_loss(lp.T.reshape(2, 1), old.T.reshape(2, 1), torch.tensor([1.0, -1.0]), torch.ones(2, 1),
                    num_tokens_global=2, clip_low=0.2, clip_high=0.28)
    # +A: min(1.5, 1.28) = 1.28 -> -1.28; -A: min(-0.5, -0.8) = -0.8 -> +0.8; mean = -0.24
    assert out.loss.item() == pytest.approx((-1.28 + 0.8) / 2)
    assert out.metrics["clip_fraction_sum"].item() == 2


def test_on_policy_loss_gradient_is_minus_advantage_weighted_logprob_gradient():
    logits = torch.randn(3, 4, requires_grad=True)
    lp = torch.log_softmax(logits, -1)[:, 0].reshape(3, 1)
    adv = torch.tensor([1.0, -2.0, 0.5])
    out = grpo_loss(lp, lp.detach(), adv, torch.ones(3, 1), num_tokens_global=3)
    assert out.loss.item() == pytest.approx(-adv.mean().item())  # ratio 1 everywhere
    (g,) = torch.autograd.grad(out.loss, logits, retain_graph=True)
    (g_ref,) = torch.autograd.grad(-(adv * lp.squeeze(1)).sum() / 3, logits)
    assert torch.allclose(g, g_ref)


def test_kl_term_and_is_weights_enter_the_loss():
    lp = torch.log(torch.tensor([[0.5]]))
    ref = torch.log(torch.tensor([[0.25]]))
    out = grpo_loss(lp, lp, torch.tensor([0.0]), torch.ones(1, 1), 1, kl_coef=0.1, ref_logprobs_BT=ref)
    assert out.loss.item() == pytest.approx(0.1 * (0.5 + math.log(2) - 1))
    weighted = grpo_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 1), 1, is_weights_BT=torch.tensor([[0.5]]))
    assert weighted.loss.item() == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 1), 1, kl_coef=0.1)
    with pytest.raises(ValueError, match="num_tokens_global"):
        grpo_loss(lp, lp, torch.tensor([1.0]), torch.zeros(1, 1), 0)


def test_token_level_normalisation_is_invariant_to_micro_batches_and_ranks():
    torch.manual_seed(0)
    B, T = 8, 6
    logits = torch.randn(B, T, 5, requires_grad=True)
    old = torch.log_softmax(torch.randn(B, T, 5), -1)[..., 0]
    adv = torch.randn(B)
    mask = (torch.rand(B, T) > 0.3).float()
    n_global = mask.sum()

    def loss_on(rows, denom):
        lp = torch.log_softmax(logits[rows], -1)[..., 0]
        return grpo_loss(lp, old[rows], adv[rows], mask[rows], denom, kl_coef=0.05,
                         ref_logprobs_BT=old[rows]).loss

    full = loss_on(slice(0, B), n_global)
    (g_full,) = torch.autograd.grad(full, logits)
    # 2 "ranks" x 2 micro-batches of uneven token counts, each normalised by the global count, summed
    shards = [slice(0, 1), slice(1, 4), slice(4, 5), slice(5, 8)]
    total = sum(loss_on(s, n_global) for s in shards)
    (g_sharded,) = torch.autograd.grad(total, logits)
    assert total.item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.allclose(g_sharded, g_full, atol=1e-6)
    # the per-micro-batch mean (what a naive implementation does) is not invariant
    naive = sum(loss_on(s, mask[s].sum()) for s in shards) / len(shards)
    assert abs(naive.item() - full.item()) > 1e-4


def test_dual_clip_caps_negative_advantage_losses_hand_values():
    # ratio 5 (log 5) with A = -1: the plain clip keeps max(-(5 * -1), -(1.28 * -1)) = 5;
    # dual-clip c = 3 caps it at -c * A = 3. A positive-advantage token (ratio 5, A = +1) is untouched: -1.28.
    lp = torch.log(torch.tensor([[5.0], [5.0]]))
    old = torch.zeros(2, 1)
    adv = torch.tensor([-1.0, 1.0])
    plain = grpo_loss(lp, old, adv, torch.ones(2, 1), 2, clip_low=0.2, clip_high=0.28)
    dual = grpo_loss(lp, old, adv, torch.ones(2, 1), 2, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    assert plain.loss.item() == pytest.approx((5.0 - 1.28) / 2)
    assert dual.loss.item() == pytest.approx((3.0 - 1.28) / 2)
    # below the cap (ratio 2, A = -1: loss 2 < 3) dual-clip changes nothing
    lp2 = torch.log(torch.tensor([[2.0]]))
    assert grpo_loss(lp2, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), 1,
                     dual_clip=3.0).loss.item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="dual_clip"):
        grpo_loss(lp2, lp2, torch.tensor([-1.0]), torch.ones(1, 1), 1, dual_clip=1.0)


def test_log_ratio_clamp_keeps_the_loss_finite():
    # a token 100 nats more likely now than at rollout: exp(100) * A overflows nothing once clamped to 20
    lp, old = torch.tensor([[0.0]]), torch.tensor([[-100.0]])
    out = grpo_loss(lp, old, torch.tensor([-1.0]), torch.ones(1, 1), 1, log_ratio_clamp=20.0)
    assert out.loss.item() == pytest.approx(math.exp(20.0))
    assert out.metrics["ratio_sum"].item() == pytest.approx(math.exp(20.0))
    unclamped = grpo_loss(lp, old, torch.tensor([-1.0]), torch.ones(1, 1), 1, log_ratio_clamp=1e9)
    assert math.isinf(unclamped.loss.item())  # fp32 exp(100) overflows: what the clamp prevents


def test_k3_clamps_hand_values():
    # ref - lp = 3: k3 = e^3 - 3 - 1 = 16.0855, capped at kl_clamp = 10
    lp, ref = torch.tensor([[0.0]]), torch.tensor([[3.0]])
    assert kl_k3(lp, ref, kl_clamp=1e9).item() == pytest.approx(math.exp(3) - 4)
    assert kl_k3(lp, ref).item() == pytest.approx(10.0)
    # ref - lp = -50: k3 = e^-50 + 50 - 1 ~ 49; the log-ratio clamp at 20 gives e^-20 + 20 - 1
    assert kl_k3(torch.tensor([[0.0]]), torch.tensor([[-50.0]]), kl_clamp=1e9).item() == \
        pytest.approx(math.exp(-20) + 19)


def test_warmup_factor_hand_values():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
