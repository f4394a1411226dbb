"""The 2D selective scan (SS2D) core shared by RS3Mamba's and MambaBCD's SS2D modules.

Both keep the official parameter names (``x_proj_weight``, ``dt_projs_weight``,
``dt_projs_bias``, ``A_logs``, ``Ds``) so checkpoints load as is; only their SS2D wrappers
(gating, norms, registration order) differ.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from baselines.mamba.selective_scan import cross_merge, cross_scan, selective_scan

DIRECTIONS = 4


def ssm_parameters(d_inner: int, dt_rank: int, d_state: int, dt_min: float = 0.001, dt_max: float = 0.1,
                   dt_init_floor: float = 1e-4) -> dict[str, nn.Parameter]:
    """The 4 directions' SSM parameters at VMamba's init.

    x_proj at nn.Linear's default init; dt_proj weight U(±dt_rank^-0.5), bias = softplus⁻¹(dt)
    with dt log-uniform in [dt_min, dt_max] (floor dt_init_floor); S4D-real A = −(1..N) per
    channel (stored as log), D = 1; the 4 copies flattened as the official code does.
    """
    k, bound, std = DIRECTIONS, d_inner ** -0.5, dt_rank ** -0.5
    dt = torch.exp(torch.rand(k, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(k * d_inner, 1)
    return {
        "x_proj_weight": nn.Parameter(torch.empty(k, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound)),
        "dt_projs_weight": nn.Parameter(torch.empty(k, d_inner, dt_rank).uniform_(-std, std)),
        "dt_projs_bias": nn.Parameter(dt + torch.log(-torch.expm1(-dt))),
        "A_logs": nn.Parameter(torch.log(a)),  # [K·d_inner, N]
        "Ds": nn.Parameter(torch.ones(k * d_inner)),
    }


def ss2d_core(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, d_inner, H, W] → the 4 directions' selective scans merged: [B, d_inner, H·W], float32.

    ``module`` holds the ``ssm_parameters`` and ``dt_rank``, ``d_state``.
    """
    b, _, h, w = x.shape
    length = h * w
    xs = cross_scan(x)  # [B, 4, d_inner, L]
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, module.x_proj_weight)
    dts, bs, cs = torch.split(x_dbl, [module.dt_rank, module.d_state, module.d_state], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, module.dt_projs_weight)
    ys = selective_scan(
        xs.float().reshape(b, -1, length).contiguous(), dts.float().reshape(b, -1, length).contiguous(),
        -torch.exp(module.A_logs.float()), bs.float().contiguous(), cs.float().contiguous(), module.Ds.float(),
        delta_bias=module.dt_projs_bias.float().reshape(-1), delta_softplus=True,
    ).reshape(b, DIRECTIONS, -1, length)
    return cross_merge(ys, h, w)
