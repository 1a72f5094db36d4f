"""Flow matching: Euler sampler with CFG + clamp, the training loss, head-only guided sampling.

Convention (TwinVLA): t = 1 is noise, t = 0 the action; x_t = t*noise + (1-t)*action,
v = noise - action, and sampling steps x <- x - dt*v from t = 1 down to dt.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .action_head import DiT

CLAMP = 5.0
T_MIN = 0.001  # flow_sig_min of the reference


def time_grid(steps: int) -> list[float]:
    """1 - k/steps in Python floats (each becomes a float32 tensor at use, as the reference)."""
    return [1 - k / steps for k in range(steps)]


@dataclass
class Conditioning:
    """The condition of one chunk, embedded once (z_embedder does not depend on x or t).
    cond (2B, 1, W) rows [s0 left, s0 right, s1 left, ...]; with CFG also uncond (2B, 1, W)."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    cfg_scale: float

    @property
    def use_cfg(self) -> bool:
        return self.uncond is not None and self.cfg_scale > 1.0

    def z_batch(self) -> torch.Tensor:
        # With CFG the DiT runs on [x, x] against [cond, uncond]: for one sample that is the
        # reference's [x0, x1, x0, x1] / [c_l, c_r, u, u], in one call.
        return torch.cat([self.cond, self.uncond], dim=0) if self.use_cfg else self.cond


def embed_condition(net: DiT, z: torch.Tensor, cfg_scale: float) -> Conditioning:
    """z (2B, 1, hidden) combined readouts -> Conditioning."""
    if cfg_scale > 1.0:
        if net.z_embedder.uncondition is None:
            raise ValueError("cfg_scale > 1 needs a checkpoint trained with enable_cfg (no `uncondition`)")
        n = z.shape[0]
        uncond = net.z_embedder.uncondition.unsqueeze(0).expand(n, 1, -1)
        emb = net.z_embedder(torch.cat([z, uncond], dim=0))
        return Conditioning(emb[:n], emb[n:], cfg_scale)
    return Conditioning(net.z_embedder(z), None, cfg_scale)


def velocity(net: DiT, x: torch.Tensor, t: float, cond: Conditioning) -> torch.Tensor:
    t_emb = net.t_embedder(torch.tensor([t], device=x.device))
    if not cond.use_cfg:
        return net.forward_embedded(x, t_emb, cond.cond)
    out = net.forward_embedded(torch.cat([x, x], dim=0), t_emb, cond.z_batch())
    v_cond, v_uncond = torch.split(out, x.shape[0], dim=0)
    return v_uncond + cond.cfg_scale * (v_cond - v_uncond)


def guidance_weight(tau: float, beta: float) -> float:
    """RTC's min(beta, (tau^2 + (1-tau)^2) / (tau (1-tau))); tau -> 0 or 1 diverges: beta."""
    if tau <= 0.0 or tau >= 1.0:
        return beta
    return min(beta, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau)))


@dataclass
class RowGuidance:
    """Real-time-chunking target in the head's row layout: target/weights (2B, L, A)."""

    target: torch.Tensor
    weights: torch.Tensor
    max_weight: float = 5.0


def sample(net: DiT, x: torch.Tensor, cond: Conditioning, steps: int, guidance: RowGuidance | None = None) -> torch.Tensor:
    """Euler integration from noise x (2B, L, A) at t = 1 to the action at t = 0, the
    reference's ops (bit parity).

    With guidance (RTC, Black et al. 2025), per step: a_hat = x - t*v is the predicted clean
    action (x_t - t*(noise - a) = a), err = (Y - a_hat) * W, and g = err^T d(a_hat)/dx is the
    VJP through the head only (the VLM context is fixed). g is minus the gradient of
    0.5*||W^0.5 (Y - a_hat)||^2, so moving x along +g pulls the chunk toward Y. RTC integrates
    in tau = 1 - t with x <- x + dtau*(v_tau + w*g) where v_tau = -v; in TwinVLA's direction that
    is x <- x - dt*(v - w*g): the guided velocity is v - w*g.
    """
    grid = time_grid(steps)
    return _integrate(lambda x, k: velocity(net, x, grid[k], cond), x, grid, cond.use_cfg, guidance)


def sample_fused(net: DiT, x: torch.Tensor, cond: Conditioning, steps: int, guidance: RowGuidance | None = None) -> torch.Tensor:
    """`sample` with the per-step work that does not depend on x hoisted out of the loop: all
    time embeddings in one call, added to the conditions once; the CFG mix as one lerp. No
    tensor is created from host values inside the loop, so on a GPU it runs without a host sync
    (unguided) and can be captured as a CUDA graph. Same function, float rounding aside."""
    grid = time_grid(steps)
    # time_grid's values made on the device (float64 as Python's floats, then float32): no host copy.
    t = (1 - torch.arange(steps, dtype=torch.float64, device=x.device) / steps).float()
    with torch.no_grad():
        c = net.condition_tokens(t, cond.z_batch())  # (steps, N', 1, W)

    def vel(x: torch.Tensor, k: int) -> torch.Tensor:
        if not cond.use_cfg:
            return net.forward_tokens(x, c[k])
        v_cond, v_uncond = net.forward_tokens(torch.cat([x, x], dim=0), c[k]).chunk(2, dim=0)
        return torch.lerp(v_uncond, v_cond, cond.cfg_scale)  # v_u + s (v_c - v_u)

    return _integrate(vel, x, grid, cond.use_cfg, guidance)


def _integrate(vel, x: torch.Tensor, grid: list[float], clamp: bool, guidance: RowGuidance | None) -> torch.Tensor:
    """Euler steps x <- x - v / steps over `grid`; vel(x, k) is the velocity at grid[k]."""
    dt = -1 / len(grid)
    for k, t in enumerate(grid):
        if guidance is None:
            with torch.inference_mode():
                v = vel(x, k)
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                v = vel(xg, k)
                a_hat = xg - t * v
                err = (guidance.target - a_hat.detach()) * guidance.weights
                (g,) = torch.autograd.grad(a_hat, xg, grad_outputs=err)
            v = v.detach() - guidance_weight(1.0 - t, guidance.max_weight) * g
        x = x + dt * v
        if clamp:
            x = torch.clamp(x, -CLAMP, CLAMP)
    return x


def sample_time(n: int) -> torch.Tensor:
    """t = 0.999 * Beta(1.5, 1.0) + 0.001 (float32 Beta, global RNG, as the reference)."""
    beta = torch.distributions.Beta(torch.tensor(1.5, dtype=torch.float32), torch.tensor(1.0, dtype=torch.float32))
    return (1 - T_MIN) * beta.sample((n,)) + T_MIN


def flow_matching_loss(net: DiT, z: torch.Tensor, action_rows: torch.Tensor, diffusion_batch: int, cfg_dropout: float,
                       valid_rows: torch.Tensor | None = None) -> torch.Tensor:
    """The reference training loss. z (2B, 1, hidden) combined readouts, action_rows (2B, L, A)
    normalized. RNG draws in the reference's order: randn_like(noise), Beta(time), rand(CFG drop).
    valid_rows (2B, L, A) bool, optional: the mean runs over the True elements only (padding past
    an episode's end left out); None is the reference's plain mean."""
    actions = action_rows.repeat(diffusion_batch, 1, 1)
    conds = z.repeat(diffusion_batch, 1, 1)
    noise = torch.randn_like(actions)
    t = sample_time(actions.shape[0]).to(device=actions.device)
    tt = t[:, None, None]
    x_t = tt * noise + (1 - tt) * actions
    pred = net(x_t, t, conds, drop_prob=cfg_dropout)
    squared = (pred - (noise - actions)) ** 2
    if valid_rows is None:
        return squared.mean()
    weights = valid_rows.to(device=squared.device, dtype=squared.dtype).repeat(diffusion_batch, 1, 1)
    return (squared * weights).sum() / weights.sum().clamp(min=1.0)
