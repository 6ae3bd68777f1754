"""Fused CPU hash-grid encoding: one compiled C++ kernel for the forward and backward of
:func:`physinv.core.encoding.hash_grid_encode` (the pure-PyTorch reference, which stays the CUDA path).

* **Forward**: for every point and level, the 8 corner rows (dense or hashed exactly as the reference),
  the gather and the trilinear blend in one pass; levels one at a time inside each thread's block of
  points (the level's table stays in cache) and the corner rows of 16 points prefetched together.
* **Backward to the tables**, deterministic and without atomics: each level's gradient table is owned
  by one thread, which adds the contributions ``grad_out * weight`` of the points in index order. Every
  row's sum is therefore formed in the same order whatever the thread count or scheduling, and the
  table gradients are bit-identical run to run (resume-after-interrupt continues a run bit for bit).
* **Backward to x** (normals ``-grad sigma``): the forward stores, only when ``x`` requires a gradient,
  the per-point Jacobian ``d out / d x`` (the trilinear weights' derivative times the corner features,
  times ``N_l``) and the backward contracts it with ``grad_out`` per point in a fixed order. The
  conventions are the reference's: zero outside ``[0, 1]``; at a coordinate exactly 0 or 1 a dense
  level contributes zero (``grid_sample``'s border clamp) and a hashed level the one-sided derivative
  of its inner cell.
* **Second order** (``create_graph=True``: a loss on the x-gradient itself, as NeRD's normals
  ``-grad sigma`` under the shading loss): the first backward is itself differentiable. A loss on
  ``grad_x`` reaches ``grad_out`` through the stored Jacobian, the tables through the same
  deterministic scatter with the trilinear weights' directional derivatives as weights, and ``x``
  through the blend's mixed second derivatives (per point); a loss on the table gradients reaches
  ``grad_out`` and ``x`` through a forward lookup in the upstream tables. A third order raises.

Technology, chosen by measurement (``benchmarks/hashgrid_speed.py``, RESULTS.md "Hash-grid encoding
kernel"): a torch C++ extension (``at::parallel_for``, so it runs on torch's own intra-op threads,
``torch.get_num_threads()``). Numba (``@njit(parallel=True)``, same algorithm, bit-identical results)
was as fast in the forward and 1.3-1.7x slower in the backward; NVIDIA Warp runs CPU kernels on one
thread. The extension is compiled once by ``make setup`` (``python -m physinv.core.hashgrid_cpu build``,
about a minute on 2 cores) into ``<venv>/physinv-ext/`` under a name keyed by the source, torch and
Python versions; importing never compiles, so a machine without the build (or with a stale one) just
reports :func:`available` False and ``backend="auto"`` uses the reference.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "hashgrid_cpu.cpp"
CFLAGS = ["-O3"]
SUPPORTED_FEATURES = (1, 2, 4, 8)

_module = None
_load_error: str | None = None


def build_dir() -> Path:
    """Where the compiled extension lives: ``$PHYSINV_EXT_DIR`` or ``<sys.prefix>/physinv-ext``."""
    return Path(os.environ.get("PHYSINV_EXT_DIR") or Path(sys.prefix) / "physinv-ext")


def module_name() -> str:
    """Extension name keyed by everything the binary depends on (source, flags, torch, Python)."""
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join(CFLAGS).encode())
    key.update(torch.__version__.encode())
    key.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return "physinv_hashgrid_cpu_" + key.hexdigest()[:12]


def _candidates(name: str) -> list[Path]:
    # torch's builder names the library "<name>.so"; accept the ABI-tagged suffixes too
    return [build_dir() / name / f"{name}{suffix}" for suffix in (".so", *importlib.machinery.EXTENSION_SUFFIXES)]


def load():
    """The compiled module, or None (reason in :func:`unavailable_reason`). Never compiles."""
    global _module, _load_error
    if _module is not None or _load_error is not None:
        return _module
    try:
        name = module_name()
        path = next((p for p in _candidates(name) if p.is_file()), None)
        if path is None:
            _load_error = f"the fused CPU hash-grid kernel is not built for this source/torch/Python (expected {build_dir() / name}); run `make setup` or `python -m physinv.core.hashgrid_cpu build`"
            return None
        loader = importlib.machinery.ExtensionFileLoader(name, str(path))
        spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        _module = module
    except Exception as exc:  # a broken or ABI-mismatched build: report it, use the reference
        _load_error = f"the fused CPU hash-grid kernel failed to load: {type(exc).__name__}: {exc}"
    return _module


def available() -> bool:
    """True when the compiled kernel is importable here."""
    return load() is not None


def unavailable_reason() -> str | None:
    load()
    return _load_error


def build(verbose: bool = False):
    """Compile the extension into :func:`build_dir` (about a minute on 2 cores) and load it."""
    global _module, _load_error
    from torch.utils import cpp_extension

    bindir = str(Path(sys.prefix) / "bin")  # a pip-installed ninja lives beside the venv's python
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    name = module_name()
    directory = build_dir() / name
    directory.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(name, [str(SOURCE)], extra_cflags=CFLAGS, build_directory=str(directory), verbose=verbose)
    _module, _load_error = None, None
    if load() is None:
        raise RuntimeError(_load_error)
    return _module


class _FusedHashGrid(torch.autograd.Function):
    """autograd wrapper: inputs ``x, *tables``; see the module docstring for the kernel."""

    @staticmethod
    def forward(ctx, x: Tensor, resolutions: list[int], dense: list[bool], *tables: Tensor) -> Tensor:
        module = _module
        with_jac = ctx.needs_input_grad[0]
        out, jac = module.forward(x, list(tables), resolutions, dense, with_jac)
        ctx.resolutions, ctx.dense = resolutions, dense
        ctx.save_for_backward(x, jac if with_jac else None, *tables)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, jac, *tables = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        want_x, want_tables = ctx.needs_input_grad[0], any(ctx.needs_input_grad[3:])
        if torch.is_grad_enabled():  # create_graph=True: a first backward that is itself differentiable
            grad_x, *grad_tables = _FusedHashGridBackward.apply(grad_out, x, jac, ctx.resolutions, ctx.dense, want_x, want_tables, *tables)
        else:
            grad_x = _module.backward_x(grad_out, jac) if want_x else None
            grad_tables = _module.backward_tables(grad_out, x, list(tables), ctx.resolutions, ctx.dense) if want_tables else [None] * len(tables)
        grad_tables = [g if need else None for g, need in zip(grad_tables, ctx.needs_input_grad[3:])]
        return (grad_x if want_x else None, None, None, *grad_tables)


class _FusedHashGridBackward(torch.autograd.Function):
    """The first backward as a function of (grad_out, x, tables), so that a loss on its result (normals
    from the x-gradient) can be differentiated once more; a third order raises."""

    @staticmethod
    def forward(ctx, grad_out: Tensor, x: Tensor, jac: Tensor | None, resolutions: list[int], dense: list[bool], want_x: bool, want_tables: bool, *tables: Tensor):
        ctx.set_materialize_grads(False)
        ctx.resolutions, ctx.dense, ctx.want_x, ctx.want_tables = resolutions, dense, want_x, want_tables
        ctx.save_for_backward(grad_out, x, jac, *tables)
        unused = x.new_empty(0)  # an output nobody asked for (dropped by _FusedHashGrid.backward)
        grad_x = _module.backward_x(grad_out, jac) if want_x else unused
        grad_tables = _module.backward_tables(grad_out, x, list(tables), resolutions, dense) if want_tables else [unused] * len(tables)
        return (grad_x, *grad_tables)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v_x: Tensor | None, *u_tables: Tensor | None):
        grad_out, x, jac, *tables = ctx.saved_tensors
        need_g, need_x = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        d_g = d_x = None
        d_tables = [None] * len(tables)
        res, dense = ctx.resolutions, ctx.dense
        if v_x is not None and ctx.want_x:  # the loss on grad_x = sum_c grad_out_c jac_c
            v = v_x.contiguous()
            if need_g:
                d_g = torch.bmm(jac, v.unsqueeze(-1)).squeeze(-1)
            if any(ctx.needs_input_grad[7:]):
                d_tables = _module.backward_tables(grad_out, x, list(tables), res, dense, v)
            if need_x:
                d_x = _module.hessian_x(grad_out, x, list(tables), res, dense, v)
        if ctx.want_tables and any(u is not None for u in u_tables):  # a loss on the table gradients
            u = [t.new_zeros(t.shape) if ut is None else ut.contiguous() for t, ut in zip(tables, u_tables)]
            enc_u, jac_u = _module.forward(x, u, res, dense, need_x)
            if need_g:
                d_g = enc_u if d_g is None else d_g + enc_u
            if need_x:
                dx_u = _module.backward_x(grad_out, jac_u)
                d_x = dx_u if d_x is None else d_x + dx_u
        d_tables = [d if need else None for d, need in zip(d_tables, ctx.needs_input_grad[7:])]
        return (d_g, d_x, None, None, None, None, None, *d_tables)


def fused_unsupported(x: Tensor, tables: Sequence[Tensor], dense: Sequence[bool]) -> str | None:
    """Why the fused kernel cannot take these inputs (None when it can)."""
    if x.device.type != "cpu" or any(t.device.type != "cpu" for t in tables):
        return f"the fused hash-grid kernel runs on the CPU only (x on {x.device}); use backend='torch' (the CUDA path) or 'auto'"
    if x.dtype != torch.float32 or any(t.dtype != torch.float32 for t in tables):
        return f"the fused hash-grid kernel takes float32 positions and tables (got x {x.dtype}, tables {sorted({str(t.dtype) for t in tables})}); use backend='torch' for other dtypes"
    if x.dim() != 2 or x.shape[-1] != 3:
        return f"the fused hash-grid kernel takes x of shape (N, 3), got {tuple(x.shape)}"
    feats = {t.shape[-1] for t in tables}
    if len(feats) != 1 or next(iter(feats)) not in SUPPORTED_FEATURES:
        return f"the fused hash-grid kernel takes 1, 2, 4 or 8 features per level, the same in every level (got {sorted(feats)})"
    for t, d in zip(tables, dense):
        rows = t.shape[0]
        if not d and rows & (rows - 1):
            return f"the fused hash-grid kernel needs power-of-two hashed tables (got {rows} rows)"
    if not available():
        return unavailable_reason()
    return None


def fused_hash_grid_encode(x: Tensor, tables: Sequence[Tensor], resolutions: Sequence[int], dense: Sequence[bool]) -> Tensor:
    """Fused form of :func:`physinv.core.encoding.hash_grid_encode` (same arguments, dense gradients).

    x (N, 3) float32 on the CPU; tables float32 (rows_l, F). Raises ValueError when the inputs are not
    supported or the kernel is not built (message from :func:`fused_unsupported`)."""
    reason = fused_unsupported(x, tables, dense)
    if reason is not None:
        raise ValueError(reason)
    x, tables = x.contiguous(), [t.contiguous() for t in tables]
    resolutions, dense = [int(r) for r in resolutions], [bool(d) for d in dense]
    if not torch.is_grad_enabled() or not (x.requires_grad or any(t.requires_grad for t in tables)):
        return _module.forward(x, tables, resolutions, dense, False)[0]  # no graph: skip autograd and the Jacobian
    return _FusedHashGrid.apply(x, resolutions, dense, *tables)


if __name__ == "__main__":  # `python -m physinv.core.hashgrid_cpu build` (make setup)
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m physinv.core.hashgrid_cpu build")
    if available():
        print(f"hashgrid_cpu: up to date ({build_dir() / module_name()})")
    else:
        print(f"hashgrid_cpu: compiling {SOURCE.name} (about a minute) ...", flush=True)
        build()
        print(f"hashgrid_cpu: built {build_dir() / module_name()}")
