"""The modularity curve over training epochs and under adversarial attack (Lu et al., 2022),
offline on MNIST-1D, with the demo network.

    python benchmarks/dynamics_attack.py [--epochs 12] [--eps 0.1 0.2] [--steps 10] [--null 100]
                                         [--out benchmarks/results] [--seed 0]

Training dynamics: gpugraph.CurveMonitor measures the curve (5 subsets of 200 test signals,
k = 3, the input as the first layer) at the end of every epoch while gpugraph.models.training.fit
trains DemoNet, writing curves.jsonl; the heat map of epochs x layers goes to
dynamics.png. Attack: FGSM and PGD (L-infinity, --steps steps) at each --eps on the 1000 test
signals (unit variance, unbounded); the clean and the attacked curve are taken on the same
samples, those classified correctly whose attack succeeded, with z-scores against --null
label permutations; the attacked curve is read against the true labels and against the
model's predicted labels on the attacked signals (gpugraph.attacks.Attack.labels). Prints
the tables, writes attack.json and attack.png under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import environment

import gpugraph as gg
from gpugraph.models.training import fit
from gpugraph.tools.demo import DemoNet, mnist1d_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--null", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    print(environment())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = mnist1d_data()

    jsonl = out / "curves.jsonl"
    jsonl.unlink(missing_ok=True)
    monitor = gg.CurveMonitor((x_test, y_test), out=out, capture_kwargs={"include_input": True}, n=200, repeats=5)
    model = fit(DemoNet(), x_train, y_train, args.epochs, seed=args.seed, log=None, callback=monitor)
    history = gg.CurveMonitor.read(jsonl)
    layers = history[0][1].layers
    print(f"\nmodularity per layer after each epoch ({len(history)} lines in {jsonl})")
    width = max(len(n) for n in layers)
    print(f"{'epoch':>5}  " + "  ".join(f"{n:>{max(6, len(n))}}" for n in layers))
    for epoch, c in history:
        print(f"{epoch:>5}  " + "  ".join(f"{m:>{max(6, len(n))}.3f}" for n, m in zip(layers, c.mean, strict=True)))
    monitor.plot(out / "dynamics.png")

    report = {"environment": environment(), "epochs": args.epochs, "layers": layers, "attacks": {}}
    for attack in ("fgsm", "pgd"):
        for eps in args.eps:
            hit = (
                gg.attacks.fgsm(model, x_test, y_test, eps)
                if attack == "fgsm"
                else gg.attacks.pgd(model, x_test, y_test, eps, steps=args.steps, seed=args.seed)
            )
            keep = hit.mask
            n = min(200, int(keep.sum()) // 5)
            clean = gg.modularity_curve(
                gg.capture(model, (x_test[keep], y_test[keep]), include_input=True),
                k=3,
                n=n,
                repeats=5,
                seed=args.seed,
                null=args.null,
            )
            acts = gg.capture(model, (hit.x[keep], y_test[keep]), include_input=True)
            bad = {
                which: gg.modularity_curve(
                    acts, hit.labels(y_test, which), k=3, n=n, repeats=5, seed=args.seed, null=args.null
                )
                for which in ("true", "predicted")
            }
            print(
                f"\n{attack} eps={eps}: accuracy {hit.clean_accuracy:.1%} clean, {hit.attacked_accuracy:.1%} "
                f"attacked; curves on {int(keep.sum())} correct-and-fooled signals (5 subsets of {n}, k = 3); "
                "attacked against the true and the predicted labels"
            )
            print(
                f"{'layer':<{width}}  {'clean':>14}  {'att. true':>14}  {'att. predicted':>14}  {'z clean':>7}  "
                f"{'z true':>7}  {'z pred.':>7}"
            )
            for j, name in enumerate(layers):
                t, p_ = bad["true"], bad["predicted"]
                print(
                    f"{name:<{width}}  {clean.mean[j]:6.3f}+-{clean.std[j]:.3f}  {t.mean[j]:6.3f}+-{t.std[j]:.3f}"
                    f"  {p_.mean[j]:6.3f}+-{p_.std[j]:.3f}  {clean.z[j]:7.1f}  {t.z[j]:7.1f}  {p_.z[j]:7.1f}"
                )
            report["attacks"][f"{attack} {eps}"] = {
                "clean_accuracy": hit.clean_accuracy,
                "attacked_accuracy": hit.attacked_accuracy,
                "samples": int(keep.sum()),
                "clean": clean.to_dict(),
                "attacked": bad["true"].to_dict(),
                "attacked_predicted_labels": bad["predicted"].to_dict(),
            }
            if attack == "pgd" and eps == max(args.eps):
                clean.plot(
                    out / "attack.png",
                    label="clean",
                    others={
                        f"PGD eps={eps}, true labels": bad["true"],
                        f"PGD eps={eps}, predicted labels": bad["predicted"],
                    },
                )
    report["seconds"] = time.perf_counter() - start
    (out / "attack.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(
        f"\nwrote {out / 'dynamics.png'}, {jsonl}, {out / 'attack.json'} and {out / 'attack.png'} "
        f"in {report['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
