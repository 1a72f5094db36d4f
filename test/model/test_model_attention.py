"""Joint-attention mask, shared rotary positions, attention re-weighting and the MoE gate."""
from __future__ import annotations

import torch
from torch import nn

from twinvla_ros.model.twin_llm import JointLayout, joint_mask, moe_mlp, reweight_attention


def test_mask_blocks():
    C, S = 3, 4
    m = joint_mask(C, S)
    sh, le, ri = slice(0, C), slice(C, C + S), slice(C + S, C + 2 * S)
    tri = lambda n: torch.ones(n, n, dtype=torch.bool).tril()  # noqa: E731
    assert torch.equal(m[sh, sh], tri(C))  # shared: causal among themselves
    assert not m[sh, le].any() and not m[sh, ri].any()  # shared never sees an arm
    assert m[le, sh].all() and m[ri, sh].all()  # arms see the whole shared block
    assert torch.equal(m[le, le], tri(S)) and torch.equal(m[ri, ri], tri(S))  # own arm: causal
    assert torch.equal(m[le, ri], tri(S))  # left token i sees right tokens <= i
    assert torch.equal(m[ri, le], tri(S))  # right token i sees left tokens <= i (not all of them)
    assert not m[C + S, C + 1]  # right token 0 cannot see left token 1


def test_arms_share_rotary_positions():
    lay = JointLayout.build([5], 3)
    assert lay.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7]


def test_padded_layout_matches_unpadded_sample():
    lay = JointLayout.build([5, 3], 2)
    assert lay.C == 5
    pos = lay.position_ids[1].tolist()
    assert pos[2:5] == [0, 1, 2] and pos[5:] == [3, 4, 3, 4]
    a = lay.allowed[1, 0]
    assert not a[2:, :2].any()  # pads are no key for the real tokens
    assert torch.equal(a[:2, :2], torch.eye(2, dtype=torch.bool))
    assert torch.equal(a[2:, 2:], joint_mask(3, 2))  # the real tokens see exactly what they would alone
    assert torch.equal(lay.allowed[0, 0], joint_mask(5, 2))


def test_reweighting_rows_and_shared_mass():
    torch.manual_seed(0)
    T, C = 9, 4
    w = torch.softmax(torch.randn(2, 3, T, T), dim=-1)
    shared = torch.zeros(T, dtype=torch.bool)
    shared[:C] = True
    out = reweight_attention(w, shared[None, None, None, :], alpha=2.0)
    assert torch.allclose(out.sum(-1), torch.ones(2, 3, T), atol=1e-6)
    m = w[..., :C].sum(-1)
    assert torch.allclose(out[..., :C].sum(-1), 2 * m / (1 + m), atol=1e-6)
    # Within each group the proportions are kept.
    assert torch.allclose(out[..., C:] / out[..., C:].sum(-1, keepdim=True), w[..., C:] / w[..., C:].sum(-1, keepdim=True), atol=1e-6)


def test_reweighting_is_straight_through():
    w = torch.softmax(torch.randn(1, 1, 4, 4), dim=-1).requires_grad_(True)
    shared = torch.tensor([True, True, False, False])[None, None, None, :]
    out = reweight_attention(w, shared)
    (out * torch.arange(4.0)).sum().backward()
    assert torch.allclose(w.grad, torch.arange(4.0).expand(1, 1, 4, 4))


class Const(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full_like(x, self.value) + 0 * x


def test_moe_gate_hard_argmax_with_straight_through():
    gate = nn.Linear(4, 2)
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.zero_()
        gate.weight[0, 0] = 5.0  # feature 0 > 0 -> left expert (index 0)
    x = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0.3, 0, 0, 0]])
    out = moe_mlp(gate, Const(10.0), Const(-7.0), x)
    assert out[:, 0].tolist() == [10.0, -7.0, 10.0]  # exactly the chosen expert's output
    out.sum().backward()
    assert gate.weight.grad.abs().sum() > 0  # gradient reaches the gate through the soft scores
