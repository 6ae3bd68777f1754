"""Hash-grid encoding speed: the pure-PyTorch reference against the fused CPU kernel.

Prints one JSON object. For each point count: forward, backward and forward+backward milliseconds
per call of the encoding alone (ngp config: 16 levels x 2 features, T = 2^19, N_min 16, N_max 512;
backward = table gradients, as in training), for ``backend="torch"``
and ``backend="fused"``, in the same process; plus an ngp field training step on the same points
(encoding -> 1x64 MLP -> 16, SH degree 4 -> 2x64 MLP -> RGB, forward + backward + Adam over all
parameters), and the no-grad density evaluation that the occupancy-grid update and early-termination
pass run; and ``normals_second_order``: normals -grad sigma of the density MLP by autograd with
``create_graph``, a loss on them and its backward to the tables and the MLP (NeRD's hash-grid
variant trains so). The two backends are timed in alternating rounds (median of the per-call medians), so that
a load change on a shared machine hits both alike.

Points (``--layout``): ``rays`` (default), runs of 16 consecutive samples 1/256 of the box diagonal
apart along random lines through the unit cube, like the samples an occupancy grid leaves near a
surface (1,024 rays x 16 = 16,384 points); ``random``, uniform in the cube (no locality at all, the
worst case for both forms).

    python benchmarks/hashgrid_speed.py --threads 2 --points 16384,32768 --layout rays
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from physinv.core import hashgrid_cpu
from physinv.core.encoding import HashGridEncoding, SHEncoding
from physinv.core.field import MLP


def median_ms(fn, reps: int) -> float:
    fn()  # warm
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)


class Field(nn.Module):
    """The ngp field of physinv.nerf (hash grid, 1x64 density MLP, 2x64 colour MLP), rebuilt here so
    that the benchmark depends on core only."""

    def __init__(self, backend: str):
        super().__init__()
        self.encoding = HashGridEncoding(16, 2, 19, 16, 512, backend=backend)
        self.density_net = MLP(32, 16, width=64, depth=1)
        self.sh = SHEncoding(3)
        self.colour_net = MLP(16 + 16, 3, width=64, depth=2, output_activation="sigmoid")

    def density(self, x):
        return self.density_net(self.encoding(x))

    def forward(self, x, d):
        h = self.density_net(self.encoding(x))
        return torch.exp(h[:, :1]), self.colour_net(torch.cat([h, self.sh(d)], -1))


def sample_points(n: int, layout: str, g: torch.Generator) -> torch.Tensor:
    """(n, 3) points in [0, 1]^3: ``random`` uniform, or ``rays``: runs of 16 samples along lines."""
    if layout == "random":
        return torch.rand(n, 3, generator=g)
    per_ray, step = 16, 3**0.5 / 256
    rays = -(-n // per_ray)
    dirs = torch.nn.functional.normalize(torch.randn(rays, 3, generator=g), dim=-1)
    start = 0.15 + 0.7 * torch.rand(rays, 3, generator=g)  # the run starts inside the box
    t = (torch.arange(per_ray, dtype=torch.float32) - per_ray / 2) * step
    return (start[:, None] + t[None, :, None] * dirs[:, None]).reshape(-1, 3)[:n].clamp(0, 1)


def measure(n: int, reps: int, rounds: int, layout: str) -> dict:
    g = torch.Generator().manual_seed(0)
    x = sample_points(n, layout, g)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    grad_out = torch.randn(n, 32, generator=g)
    target = torch.rand(n, 3, generator=g)
    fields = {}
    for backend in ("torch", "fused"):
        torch.manual_seed(1)
        fields[backend] = Field(backend)
    fields["fused"].load_state_dict(fields["torch"].state_dict())
    opts = {b: torch.optim.Adam(f.parameters(), lr=1e-2, eps=1e-15) for b, f in fields.items()}

    def cases(backend):
        f, opt = fields[backend], opts[backend]
        enc = f.encoding
        out = {}

        def fwd():
            return enc(x)

        def fwd_bwd():
            y = enc(x)
            y.backward(grad_out)
            enc.zero_grad(set_to_none=True)

        def step():
            opt.zero_grad(set_to_none=True)
            sigma, rgb = f(x, d)
            ((rgb - target).square().mean() + 1e-3 * sigma.mean()).backward()
            opt.step()

        def second_order():
            xx = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(f.density_net(enc(xx))[:, 0].sum(), xx, create_graph=True)
            (torch.nn.functional.normalize(g, dim=-1) * d).sum().backward()  # a loss on the normals -grad sigma
            f.zero_grad(set_to_none=True)

        def density_no_grad():
            with torch.no_grad():
                f.density(x)

        out["forward"] = fwd
        out["forward_backward"] = fwd_bwd
        out["field_train_step"] = step
        out["density_no_grad"] = density_no_grad
        out["normals_second_order"] = second_order
        return out

    names = ["forward", "forward_backward", "field_train_step", "density_no_grad", "normals_second_order"]
    acc = {b: {k: [] for k in names} for b in fields}
    fns = {b: cases(b) for b in fields}
    for _ in range(rounds):
        for b in fields:
            for k in names:
                acc[b][k].append(median_ms(fns[b][k], reps))
    res = {b: {k: round(statistics.median(v), 2) for k, v in acc[b].items()} for b in acc}
    for b in res:
        res[b]["backward"] = round(res[b]["forward_backward"] - res[b]["forward"], 2)
    res["speedup"] = {k: round(res["torch"][k] / res["fused"][k], 2) for k in [*names, "backward"]}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", default="16384,32768", help="comma-separated point counts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layout", choices=["rays", "random"], default="rays", help="where the points lie (see above)")
    ap.add_argument("--reps", type=int, default=5, help="calls per timing")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of both backends")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not hashgrid_cpu.available():
        raise SystemExit(f"hashgrid_speed: {hashgrid_cpu.unavailable_reason()}")
    report = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "layout": args.layout,
        "config": {"levels": 16, "features": 2, "log2_table_size": 19, "base_resolution": 16, "finest_resolution": 512},
        "results": {},
    }
    for n in [int(v) for v in args.points.split(",")]:
        report["results"][str(n)] = measure(n, args.reps, args.rounds, args.layout)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
