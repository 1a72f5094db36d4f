"""Flow sampler (CFG, clamp, time grid, noise layouts), output layout, loss, RTC guidance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from twinvla_ros.model import Guidance, TwinVLAPolicy, flow
from twinvla_ros.model.action_head import DiT
from twinvla_ros.model.configuration_twinvla import TwinVLAConfig


@pytest.fixture(scope="module")
def net() -> DiT:
    torch.manual_seed(0)
    return DiT(TwinVLAConfig.preset("tiny")).eval()


def test_time_grid_is_python_floats():
    grid = flow.time_grid(10)
    assert grid[0] == 1.0 and grid[-1] == 1 - 9 / 10 and len(grid) == 10
    assert torch.tensor([grid[3]]).dtype == torch.float32 and torch.tensor([grid[3]]).item() == np.float32(1 - 3 / 10)


def test_cfg_velocity_is_uncond_plus_scale_times_difference(net):
    torch.manual_seed(1)
    z = torch.randn(2, 1, 64)
    x = torch.randn(2, 20, 10)
    cond = flow.embed_condition(net, z, 1.5)
    with torch.no_grad():
        v = flow.velocity(net, x, 0.7, cond)
        t = torch.tensor([0.7])
        v_c = net(x, t, z)
        v_u = net(x, t, net.z_embedder.uncondition.unsqueeze(0).expand(2, 1, -1))
    assert torch.allclose(v, v_u + 1.5 * (v_c - v_u), atol=1e-5)
    assert not torch.allclose(v, v_c, atol=1e-3)


def test_sampling_clamps_to_five_with_cfg_only(net):
    big = DiT(TwinVLAConfig.preset("tiny")).eval()
    big.load_state_dict(net.state_dict())
    with torch.no_grad():
        big.final_layer.linear.bias.fill_(100.0)  # velocity ~ 100: one step would leave [-5, 5]
    z = torch.randn(2, 1, 64)
    x0 = torch.randn(2, 20, 10)
    out = flow.sample(big, x0, flow.embed_condition(big, z, 1.5), 10)
    assert out.abs().max() == 5.0
    out = flow.sample(big, x0, flow.embed_condition(big, z, 1.0), 10)  # no CFG: no clamp
    assert out.abs().max() > 50.0


def test_euler_step_is_x_minus_dt_v(net):
    z = torch.randn(2, 1, 64)
    x0 = torch.randn(2, 20, 10)
    cond = flow.embed_condition(net, z, 1.0)
    with torch.no_grad():
        one = flow.sample(net, x0, cond, 1)
        expect = x0 + (-1.0) * net(x0, torch.tensor([1.0]), z)
    assert torch.equal(one, expect)


def test_output_layout_of_the_two_rows(policy):
    # Row 0 (left-conditioned) holds steps 0..9, row 1 steps 10..19, each as [L 10-D, R 10-D].
    rows = torch.arange(2 * 20 * 10, dtype=torch.float32).reshape(2, 20, 10)
    ident = TwinVLAPolicy(policy.model, policy.tokenizer, {"k": {"action": {"q01": [-1.0] * 10, "q99": [1.0] * 10, "mask": [False] * 10}}})
    chunk = ident._rows_to_chunks(rows, 1)[0]
    assert chunk.shape == (20, 20)
    assert np.array_equal(chunk[0, :10], np.arange(0, 10)) and np.array_equal(chunk[0, 10:], np.arange(10, 20))
    assert np.array_equal(chunk[1, :10], np.arange(20, 30))
    assert np.array_equal(chunk[10], np.arange(200, 220))  # first step of the right-conditioned row
    assert np.array_equal(chunk.reshape(-1, 20, 10), rows.numpy())


def test_noise_layouts(policy, obs):
    ctx = policy.encode(obs)
    torch.manual_seed(11)
    noise4 = torch.randn(4, 20, 10)  # what the reference draws with CFG
    a = policy.sample(ctx, seed=11)
    assert np.array_equal(a, policy.sample(ctx, noise=noise4))
    assert np.array_equal(a, policy.sample(ctx, noise=noise4[:2].numpy()))
    assert not np.array_equal(a, policy.sample(ctx, seed=12))
    with pytest.raises(ValueError, match="noise must have shape"):
        policy.sample(ctx, noise=torch.zeros(3, 20, 10))

    no_cfg = TwinVLAPolicy(policy.model, policy.tokenizer, policy.statistics, cfg_scale=1.0)
    torch.manual_seed(11)
    noise2 = torch.randn(2, 20, 10)  # without CFG the reference draws (2, 20, 10)
    ctx2 = no_cfg.encode(obs)
    assert ctx2.conditioning.uncond is None
    assert np.array_equal(no_cfg.sample(ctx2, seed=11), no_cfg.sample(ctx2, noise=noise2))


def test_loss_follows_the_reference_recipe(net):
    z = torch.randn(4, 1, 64)
    actions = torch.rand(4, 20, 10) * 2 - 1
    torch.manual_seed(5)
    loss = flow.flow_matching_loss(net, z, actions, 16, 0.1)
    torch.manual_seed(5)
    a = actions.repeat(16, 1, 1)
    c = z.repeat(16, 1, 1)
    noise = torch.randn_like(a)
    t = 0.999 * torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0)).sample((64,)) + 0.001
    drop = torch.rand(64) < 0.1
    c = torch.where(drop[:, None, None], net.z_embedder.uncondition.expand(64, 1, 64), c)
    pred = net(t[:, None, None] * noise + (1 - t[:, None, None]) * a, t, c)
    assert drop.any()
    assert torch.equal(loss, ((pred - (noise - a)) ** 2).mean())


def test_loss_decreases_when_overfitting(make_observation):
    policy = TwinVLAPolicy.tiny(seed=1)
    model = policy.model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    observations = [make_observation(i, instruction=f"task number {i}") for i in range(2)]
    rng = np.random.default_rng(0)
    actions = np.stack([np.tile(o.proprio, (20, 1)) + rng.normal(scale=0.02, size=(20, 20)) for o in observations])
    inputs, target = policy.training_inputs(observations, actions)
    assert target.shape == (2, 20, 20) and target[..., [0, 1, 2, 10, 11, 12]].abs().max() <= 1.0  # xyz clipped

    def eval_loss():
        torch.manual_seed(123)
        with torch.no_grad():
            return model.compute_loss(inputs, target).item()

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    for _ in range(12):
        opt.zero_grad()
        loss = model.compute_loss(inputs, target)
        loss.backward()
        opt.step()
    assert model.gates[0].weight.grad is not None  # the MoE gates train through the STE
    after = eval_loss()
    assert after < 0.5 * before, (before, after)


def test_guidance_pulls_the_prefix_to_the_previous_chunk(policy, obs):
    ctx = policy.encode(obs)
    free = policy.sample(ctx, seed=0)
    rng = np.random.default_rng(3)
    target = policy.sample(ctx, seed=99) + rng.normal(scale=0.05, size=(20, 20))
    d, H = 6, 12  # frozen prefix, overlap with the previous chunk
    weights = np.zeros(H)
    weights[:d] = 1.0
    weights[d:] = np.linspace(1, 0, H - d + 2)[1:-1]
    guided = policy.sample(ctx, seed=0, guidance=Guidance(target[:H], weights, max_weight=5.0))
    err_free = np.abs(free[:d] - target[:d]).mean()
    err_guided = np.abs(guided[:d] - target[:d]).mean()
    assert err_guided < 0.25 * err_free, (err_free, err_guided)
    # Steps with weight 0 stay free, so the tail is not forced onto the target.
    assert np.abs(guided[-1] - target[-1]).mean() > 2 * err_guided
    # Zero weights reproduce unguided sampling.
    same = policy.sample(ctx, seed=0, guidance=Guidance(target, np.zeros(20)))
    assert np.allclose(same, free, atol=1e-5)
    with pytest.raises(ValueError, match="guidance needs"):
        policy.sample(ctx, guidance=Guidance(target[:, :10], np.ones(20)))


def test_guidance_weight_schedule():
    assert flow.guidance_weight(0.0, 5.0) == 5.0 and flow.guidance_weight(1.0, 5.0) == 5.0
    assert flow.guidance_weight(0.5, 5.0) == pytest.approx(2.0)
    assert flow.guidance_weight(0.9, 5.0) == 5.0
    assert flow.guidance_weight(0.5, 1.0) == 1.0


def test_a_chunk_offset_drops_the_leading_steps_and_guidance_lands_on_the_kept_ones(policy, obs):
    offset = TwinVLAPolicy(policy.model, policy.tokenizer, policy.statistics, chunk_offset=10)
    assert offset.horizon == 10
    full_ctx, ctx = policy.encode(obs), offset.encode(obs)
    full = policy.sample(full_ctx, seed=4)
    np.testing.assert_allclose(offset.sample(ctx, seed=4), full[10:], atol=1e-6)
    # Guidance on the kept steps 0..5 is guidance on the model's steps 10..15.
    target = policy.sample(full_ctx, seed=98)
    weights = np.ones(6)
    guided = offset.sample(ctx, seed=4, guidance=Guidance(target[10:16], weights))
    reference = policy.sample(full_ctx, seed=4, guidance=Guidance(
        target[:16], np.concatenate([np.zeros(10), weights])))
    np.testing.assert_allclose(guided, reference[10:], atol=1e-6)
    assert np.abs(guided[:6] - target[10:16]).mean() < 0.5 * np.abs(full[10:16] - target[10:16]).mean()
    with pytest.raises(ValueError, match="H <= 10"):
        offset.sample(ctx, guidance=Guidance(target[:11], np.ones(11)))
    for bad in (-1, 20):
        with pytest.raises(ValueError, match="chunk_offset"):
            TwinVLAPolicy(policy.model, policy.tokenizer, policy.statistics, chunk_offset=bad)
