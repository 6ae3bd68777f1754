"""instant-ngp's Adam (Müller et al. 2022, section 4; tiny-cuda-nn's ``AdamOptimizer``).

Per parameter entry ``i`` with gradient ``g_i``:

* hash-table entries whose gradient is exactly 0 are skipped: no moment decay, no step, and their
  own step counter ``t_i`` does not advance ("we skip Adam steps for hash table entries whose
  gradient is exactly 0" — sparse updates);
* network parameters get weak L2 regularisation ``g_i += lambda p_i`` (lambda = 1e-6), the tables
  none;
* ``m_i = b1 m_i + (1 - b1) g_i``, ``v_i = b2 v_i + (1 - b2) g_i^2``, ``t_i += 1``,
  ``p_i -= lr sqrt(1 - b2^t_i) / (1 - b1^t_i) * m_i / (sqrt(v_i) + eps)`` with b1 = 0.9,
  b2 = 0.99, eps = 1e-15, lr = 1e-2.

The bias correction uses each entry's own step count (as tiny-cuda-nn does), so a row first touched
at step 1000 takes a full-size first step; ``torch.optim.SparseAdam`` instead corrects with the
global step count. On the first step both equal ``torch.optim.Adam``.

The work per step is proportional to the rows touched: a table parameter (2-D, (rows, F)) with a
sparse COO gradient (from ``embedding(..., sparse=True)``, see
:class:`physinv.core.encoding.HashGridEncoding` ``sparse_grad``) is updated on its gradient's rows; one
with a dense gradient (e.g. a dense level read through ``grid_sample``) on its rows with a nonzero
gradient. A row counts as touched when any of its F features has a nonzero gradient.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


class InstantNGPAdam(torch.optim.Optimizer):
    """Adam with instant-ngp's sparse table updates and per-entry bias correction.

    params: parameters or groups; a group with ``sparse=True`` holds 2-D tables (rows, F) updated
    lazily row by row (per-row step counters), other groups are updated densely (every entry
    every step, one step counter per tensor). ``weight_decay`` is L2 added to the gradient (not
    decoupled), per group. State per parameter: ``exp_avg``, ``exp_avg_sq`` (like the parameter)
    and ``step`` (a (rows,) int32 tensor for sparse groups, a 0-d one otherwise).
    """

    def __init__(self, params: Iterable, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-15, weight_decay: float = 0.0):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"InstantNGPAdam: invalid hyper-parameters lr={lr}, betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, sparse=False))
        for group in self.param_groups:
            if group["sparse"]:
                for p in group["params"]:
                    if p.dim() != 2:
                        raise ValueError(f"InstantNGPAdam: sparse groups hold 2-D tables (rows, F), got shape {tuple(p.shape)}")

    def _state(self, p: Tensor, sparse: bool) -> dict:
        state = self.state[p]
        if not state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = torch.zeros(p.shape[0], dtype=torch.int32, device=p.device) if sparse else torch.zeros((), dtype=torch.long, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["sparse"]:
                    self._sparse_step(p, lr, b1, b2, eps, wd)
                else:
                    self._dense_step(p, lr, b1, b2, eps, wd)
        return loss

    def _dense_step(self, p: Tensor, lr: float, b1: float, b2: float, eps: float, wd: float) -> None:
        g = p.grad
        if g.is_sparse:
            g = g.to_dense()
        if wd:
            g = g.add(p, alpha=wd)
        state = self._state(p, sparse=False)
        state["step"] += 1
        t = float(state["step"])
        state["exp_avg"].lerp_(g, 1.0 - b1)
        state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
        step_size = lr * (1.0 - b2**t) ** 0.5 / (1.0 - b1**t)
        p.addcdiv_(state["exp_avg"], state["exp_avg_sq"].sqrt().add_(eps), value=-step_size)

    def _sparse_step(self, p: Tensor, lr: float, b1: float, b2: float, eps: float, wd: float) -> None:
        g = p.grad
        if g.is_sparse:
            rows, values = _sum_duplicate_rows(g, p.shape[0])
        else:
            rows = g.ne(0).any(-1).nonzero().squeeze(-1)
            values = g.index_select(0, rows)
        nonzero = values.ne(0).any(-1)  # instant-ngp: an entry whose gradient is exactly 0 is skipped
        if not bool(nonzero.all()):
            rows, values = rows[nonzero], values[nonzero]
        if rows.numel() == 0:
            return
        if wd:
            values = values + wd * p.index_select(0, rows)
        state = self._state(p, sparse=True)
        m = state["exp_avg"].index_select(0, rows).lerp_(values, 1.0 - b1)
        v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(values, values, value=1.0 - b2)
        t = state["step"].index_select(0, rows).add_(1)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        state["step"].index_copy_(0, rows, t)
        # sqrt(1 - b2^t) / (1 - b1^t) per row, looked up (cheaper than two pows per row)
        correction = _bias_correction(b1, b2, p.dtype, p.device).index_select(0, t.clamp_(max=_BIAS_STEPS)).unsqueeze(-1)
        p.index_add_(0, rows, m.div_(v.sqrt_().add_(eps)).mul_(correction).mul_(-lr))


_BIAS_STEPS = 1 << 14  # beyond this step count b1^t and b2^t vanish in float32 and the correction is 1
_BIAS_CACHE: dict = {}


def _bias_correction(b1: float, b2: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(_BIAS_STEPS + 1,) table of Adam's ``sqrt(1 - b2^t) / (1 - b1^t)`` for t = 0 .. _BIAS_STEPS
    (entry 0 unused), computed in float64."""
    key = (b1, b2, dtype, device)
    if key not in _BIAS_CACHE:
        t = torch.arange(_BIAS_STEPS + 1, dtype=torch.float64).clamp(min=1)
        _BIAS_CACHE[key] = (torch.sqrt(1.0 - b2**t) / (1.0 - b1**t)).to(dtype=dtype, device=device)
    return _BIAS_CACHE[key]


def _sum_duplicate_rows(grad: Tensor, n_rows: int) -> tuple[Tensor, Tensor]:
    """Rows (U,) ascending and their summed values (U, F) of a (maybe uncoalesced) sparse COO
    gradient of an (n_rows, F) table.

    ``Tensor.coalesce`` sorts the nnz indices (slow on a CPU: ~8 N per level); marking the rows in an
    (n_rows,) mask and summing with ``index_add_`` into the compacted rows costs one pass over the
    mask and one over the nnz."""
    idx, vals = grad._indices()[0], grad._values()
    mask = torch.zeros(n_rows, dtype=torch.bool, device=idx.device)
    mask[idx] = True
    rows = mask.nonzero().squeeze(-1)
    slot = torch.empty(n_rows, dtype=torch.long, device=idx.device)
    slot[rows] = torch.arange(rows.numel(), device=idx.device)
    summed = torch.zeros(rows.numel(), vals.shape[-1], dtype=vals.dtype, device=vals.device).index_add_(0, slot[idx], vals)
    return rows, summed
