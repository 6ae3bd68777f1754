"""φ-SfT quality benchmark: the full method vs the Only-F baseline and the paper's ablations on
generated sequences (``physinv sft synth``), scored by ``physinv sft eval``.

Prints one JSON object: per variant the Chamfer ×1e4 (aligned as the paper, and unaligned) per
sequence and averaged, and the ratio full / Only-F (the issue's target: ≤ 0.6; the paper 3.93 / 6.77).

    python benchmarks/sft_quality.py --seqs 3                                  # the issue's setting (hours on a CPU)
    python benchmarks/sft_quality.py --seqs 3 --frames 16 --res 96 --template-n 9 --sim-n 17 --steps 120   # reduced
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from physinv.sft.data import SynthConfig, synthesize_sequence
from physinv.sft.evaluate import evaluate_run
from physinv.sft.fit import SftFitConfig, run_fit

VARIANTS = {
    "full": {},
    "only_f": {"only_correctives": True},
    "no_correctives": {"correctives": False},
    "no_adaptive": {"adaptive": False},
    "no_silhouette": {"silhouette": False},
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--template-n", type=int, default=17)
    ap.add_argument("--sim-n", type=int, default=33)
    ap.add_argument("--fit-res", type=int, default=128)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--max-iters-per-frame", type=int, default=20)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", type=Path, default=Path("bench_sft"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    results: dict = {v: {"chamfer": [], "chamfer_unaligned": [], "seconds": []} for v in variants}
    template = {"chamfer": [], "chamfer_unaligned": []}
    for v in variants:  # variant-major, so that a cut-short run has full vs Only-F on every sequence first
        for s in range(args.seqs):
            data = args.out / f"seq{s}"
            if not (data / "meta.json").is_file():
                synthesize_sequence(data, SynthConfig(frames=args.frames, res=args.res, template_n=args.template_n, sim_n=args.sim_n, seed=s), progress=False)
            run = args.out / f"run{s}_{v}"
            cfg = SftFitConfig(steps=args.steps, fit_res=args.fit_res, max_iters_per_frame=args.max_iters_per_frame, device=args.device,
                               checkpoint_every=max(args.steps, 1), **VARIANTS[v])
            fit = run_fit(data, run, cfg, quiet=True)
            m = evaluate_run(run, data)
            results[v]["chamfer"].append(m["chamfer"])
            results[v]["chamfer_unaligned"].append(m["chamfer_unaligned"])
            results[v]["seconds"].append(fit["seconds"])
            print(json.dumps({"seq": s, "variant": v, "chamfer": m["chamfer"], "chamfer_unaligned": m["chamfer_unaligned"],
                              "chamfer_template": m["chamfer_template"], "chamfer_template_unaligned": m["chamfer_template_unaligned"],
                              "fit_seconds": fit["seconds"]}), file=sys.stderr, flush=True)
            if v == variants[0]:
                template["chamfer"].append(m["chamfer_template"])
                template["chamfer_unaligned"].append(m["chamfer_template_unaligned"])
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    summary = {
        "setting": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "template": {k: mean(x) for k, x in template.items()},
        "variants": {v: {**r, "chamfer_mean": mean(r["chamfer"]), "chamfer_unaligned_mean": mean(r["chamfer_unaligned"])} for v, r in results.items()},
    }
    if "full" in results and "only_f" in results:
        summary["full_over_only_f"] = mean(results["full"]["chamfer"]) / mean(results["only_f"]["chamfer"])
        summary["full_over_only_f_unaligned"] = mean(results["full"]["chamfer_unaligned"]) / mean(results["only_f"]["chamfer_unaligned"])
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
