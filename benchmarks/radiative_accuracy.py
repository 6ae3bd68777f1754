"""Accuracy of the radiative inverse problem, stage by stage (each prints one JSON line).

    python benchmarks/radiative_accuracy.py --work WORK --stage data   # créneaux + fields data sets (compiled solver)
    python benchmarks/radiative_accuracy.py --work WORK --stage cnn --minutes 12
    python benchmarks/radiative_accuracy.py --work WORK --stage dense --model unet --minutes 15
    python benchmarks/radiative_accuracy.py --work WORK --stage invert --count 4 --steps 30

Targets (issue 3): CNN regression on créneaux R² ≥ 0.988 (the slides' 98.81 %); V-Net on
held-out random fields (N = 64, ≥ 4,000 training simulations) R² ≥ 0.99; inversion through the
solver started from the network's output improves R². Every stage resumes (data shards,
training checkpoints), so a stage can be run again with more minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--stage", required=True, choices=["data", "cnn", "cnn-class", "dense", "invert"])
    ap.add_argument("--model", default="unet", choices=["unet", "vnet"])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n-fields", type=int, default=4500)
    ap.add_argument("--n-creneaux", type=int, default=2000)
    ap.add_argument("--count", type=int, default=4, help="held-out samples inverted (invert stage)")
    ap.add_argument("--tv", type=float, default=1e-4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--init-from", default=None, help="dense/cnn stages: fine-tune from this run")
    ap.add_argument("--run-name", default=None, help="run folder name under WORK (default run_<model>)")
    ap.add_argument("--class-weight", default="none", choices=["none", "balanced"], help="cnn-class stage: BCE weighting")
    args = ap.parse_args()

    from physinv.core.train import select_device
    from physinv.radiative.data import DatasetSpec, generate_dataset
    from physinv.radiative.learn import TrainSpec, evaluate_run, train_model

    work = args.work
    fields, creneaux = work / "fields", work / "creneaux"
    if args.stage == "data":
        dev = select_device(args.device)
        for kind, n, out in (("fields", args.n_fields, fields), ("creneaux", args.n_creneaux, creneaux)):
            spec = DatasetSpec(kind=kind, n=n, grid=64, batch=64, cfl=0.9, t_final=0.005, k=4, fixed_point_iters=3)
            print(json.dumps({"stage": "data", "kind": kind, **generate_dataset(spec, out, dev, compile=True)}), flush=True)
    elif args.stage in ("cnn", "cnn-class"):
        run = work / (args.run_name or f"run_{args.stage}")
        spec = TrainSpec(model=args.stage, steps=args.steps, max_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                         class_weight=args.class_weight)
        train_model(creneaux, run, spec, args.device)
        print(json.dumps({"stage": args.stage, **evaluate_run(run, creneaux, "test", args.device)}), flush=True)
    elif args.stage == "dense":
        run = work / (args.run_name or f"run_{args.model}")
        spec = TrainSpec(model=args.model, steps=args.steps, max_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                         init_from=args.init_from)
        train_model(fields, run, spec, args.device)
        print(json.dumps({"stage": "dense", **evaluate_run(run, fields, "test", args.device)}), flush=True)
    else:
        from physinv.radiative.invert import InvertSpec, invert_cli

        inv = InvertSpec(steps=args.steps, max_minutes=args.minutes, tv=args.tv, lr=0.01)
        name = args.run_name or f"run_{args.model}"
        out = work / f"invert_from_{name}"
        metrics = invert_cli(fields, out, str(work / name), -1, inv, args.device, args.count)
        print(json.dumps({"stage": "invert", **metrics}), flush=True)


if __name__ == "__main__":
    main()
