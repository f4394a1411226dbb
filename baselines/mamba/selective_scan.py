"""The Mamba S6 selective scan in pure PyTorch, and the VMamba 4-direction cross-scan.

The recurrence, per batch b, channel d and state n (state-spaces/mamba ``selective_scan_ref``
semantics, which VMamba's and RS3Mamba's ``selective_scan_fn`` calls rely on)::

    delta   = softplus(delta + delta_bias)            (softplus only if delta_softplus)
    h[t]    = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[g(d), n, t] * u[t]      h[-1] = 0
    y[t]    = sum_n C[g(d), n, t] * h[t, n]  +  D[d] * u[t]
    out     = y * silu(z)                             (only if z is given)

B and C are "variable" (input-dependent) and grouped: [batch, G, N, L] with G dividing the
channel count D_ch; channel d uses group g(d) = d // (D_ch / G) (the layout mamba_ssm's
``repeat(B, "B G N L -> B (G H) N L")`` gives). [batch, N, L] means G = 1, and a time-invariant
[D_ch, N] is accepted too. Computation is in float32; the output has u's dtype.

:func:`selective_scan_ref` is the reference: vectorised over batch, channels and state,
sequential over L (one fused multiply-add per step), so it runs anywhere and is exact but slow
for long sequences. :func:`selective_scan` dispatches to mamba_ssm's fused CUDA kernel when
``mamba_ssm`` imports and the tensors are on CUDA, unless :data:`FORCE_REFERENCE` is set.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

#: Set True to always use the pure-PyTorch reference (e.g. to compare against the kernel).
FORCE_REFERENCE = False


def _grouped(x: torch.Tensor, batch: int, channels: int, length: int, name: str) -> torch.Tensor:
    """B or C as [L, batch, G, 1, N] (time-major), or [1, 1, G, H, N] when time-invariant."""
    if x.dim() == 2:  # [D, N], the same at every step
        if x.shape[0] != channels:
            raise ValueError(f"{name} of shape {tuple(x.shape)}: expected [{channels}, N]")
        return x.float()[None, None, None]  # [1, 1, G=1, H=D, N]
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or x.shape[0] != batch or x.shape[-1] != length or channels % x.shape[1]:
        raise ValueError(f"{name} of shape {tuple(x.shape)}: expected [{batch}, G, N, {length}] "
                         f"with G dividing {channels}")
    return x.float().permute(3, 0, 1, 2).unsqueeze(3)  # [L, batch, G, 1, N]


def _steps(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Steps start:stop of a time-major tensor; a time-invariant one (leading dim 1) as is."""
    return x if x.shape[0] == 1 else x[start:stop]


def selective_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                       C: torch.Tensor, D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                       delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False, block: int = 128):
    """Pure-PyTorch selective scan (see the module docstring for the recurrence).

    Args:
        u: input [batch, D, L].
        delta: step sizes [batch, D, L] (before bias/softplus).
        A: state matrix (diagonal) [D, N]; real.
        B, C: [batch, G, N, L], [batch, N, L] or [D, N].
        D: skip weights [D] or None.
        z: gate [batch, D, L] or None.
        delta_bias: [D] or None, added to delta before the softplus.
        delta_softplus: apply softplus to delta.
        return_last_state: also return h at the last step, [batch, D, N].
        block: steps whose decays, drives and outputs are computed together (speed and peak
            memory only; the result does not depend on it).

    Returns:
        y [batch, D, L] (u's dtype), and the last state if asked.
    """
    if A.is_complex():
        raise NotImplementedError("complex A is not supported")
    batch, channels, length = u.shape
    n_state = A.shape[1]
    dtype_in = u.dtype
    u, delta, A = u.float(), delta.float(), A.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bg = _grouped(B, batch, channels, length, "B")
    Cg = _grouped(C, batch, channels, length, "C")
    groups = max(Bg.shape[2], Cg.shape[2])
    if Bg.shape[2] not in (1, groups) or Cg.shape[2] not in (1, groups):
        raise ValueError(f"B and C have different group counts ({Bg.shape[2]} vs {Cg.shape[2]})")
    per_group = channels // groups

    # Time-major, channels split as [G, H]: [L, batch, G, H, 1].
    delta_t = delta.permute(2, 0, 1).reshape(length, batch, groups, per_group, 1)
    u_t = u.permute(2, 0, 1).reshape(length, batch, groups, per_group, 1)
    if Bg.shape[3] != 1:  # time-invariant [1, 1, 1, D, N] → [1, 1, G, H, N]
        Bg = Bg.reshape(1, 1, groups, per_group, n_state)
    if Cg.shape[3] != 1:
        Cg = Cg.reshape(1, 1, groups, per_group, n_state)
    a = A.reshape(groups, per_group, n_state)
    c_col = Cg.transpose(-1, -2)  # [.., G, N, 1] or [1, 1, G, N, H] when time-invariant

    # Steps are processed in blocks: the block's decays exp(delta·A) and drives delta·B·u are
    # computed at once, the recurrence runs step by step, and the block's outputs C·h at once.
    h = u.new_zeros(batch, groups, per_group, n_state)
    ys = []
    for start in range(0, length, block):
        stop = min(start + block, length)
        decay = torch.exp(delta_t[start:stop] * a)  # [T, b, G, H, N]
        drive = (delta_t[start:stop] * u_t[start:stop]) * _steps(Bg, start, stop)
        states = []
        for t in range(stop - start):
            h = torch.addcmul(drive[t], decay[t], h)
            states.append(h)
        hs = torch.stack(states)  # [T, b, G, H, N]
        c = _steps(c_col, start, stop)
        ys.append(torch.matmul(hs, c).squeeze(-1) if c.shape[-1] == 1 else (hs * c.transpose(-1, -2)).sum(-1))
    y = torch.cat(ys)  # [L, b, G, H]
    y = y.reshape(length, batch, channels).permute(1, 2, 0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(dtype_in)
    if return_last_state:
        return y, h.reshape(batch, channels, n_state)
    return y


@functools.cache
def _fused_kernel():
    """mamba_ssm's ``selective_scan_fn`` or None when it does not import."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a CUDA/triton error while importing the extension
        return None
    return selective_scan_fn


def fused_available() -> bool:
    """Whether mamba_ssm's fused kernel can be imported here."""
    return _fused_kernel() is not None


def uses_fused(u: torch.Tensor) -> bool:
    """Whether :func:`selective_scan` would run the fused kernel for input u."""
    return not FORCE_REFERENCE and u.is_cuda and fused_available()


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False):
    """Selective scan: mamba_ssm's fused kernel on CUDA when available, else the reference.

    Same arguments and result as :func:`selective_scan_ref` (and mamba_ssm's ``selective_scan_fn``).
    """
    if uses_fused(u):
        return _fused_kernel()(u, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                               delta_softplus=delta_softplus, return_last_state=return_last_state)
    return selective_scan_ref(u, delta, A, B, C, D, z=z, delta_bias=delta_bias,
                              delta_softplus=delta_softplus, return_last_state=return_last_state)


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """VMamba's 4-direction scan: [B, C, H, W] → [B, 4, C, H·W].

    Directions: row-major, column-major, reversed row-major, reversed column-major.
    """
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    both = torch.stack([rows, cols], dim=1)
    return torch.cat([both, both.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`cross_scan` summed over directions: [B, 4, C, H·W] → [B, C, H·W] (row-major)."""
    batch, _, channels, length = ys.shape
    ys = ys[:, :2] + ys[:, 2:].flip(-1)  # undo the reversals
    cols = ys[:, 1].reshape(batch, channels, width, height).transpose(2, 3).reshape(batch, channels, length)
    return ys[:, 0] + cols
