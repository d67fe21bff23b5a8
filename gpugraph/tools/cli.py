"""The command line: ``gpugraph demo``, ``gpugraph curve``, ``gpugraph similarity``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pickle
import sys
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from gpugraph._util import jsonio as _jsonio
from gpugraph._util import memory as _memory


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return args.run(args)
        except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
            print(f"gpugraph {args.command}: error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as e:  # Ctrl-C: one line, the shell's status for SIGINT
            print(f"gpugraph {args.command}: interrupted" + (f"; {e}" if str(e) else ""), file=sys.stderr)
            return 130


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"gpugraph: warning: {message}", file=sys.stderr)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _names(text: str) -> list[str]:
    """--layers a,b: one option value, comma-separated (so it never swallows positionals)."""
    return [t for t in (part.strip() for part in text.split(",")) if t]


def _parser() -> argparse.ArgumentParser:
    from gpugraph import __version__

    p = argparse.ArgumentParser(
        prog="gpugraph",
        description="Graph analytics of deep-network representations: layer-wise modularity "
        "curves, graph-based similarity between layers and models.",
    )
    p.add_argument("--version", action="version", version=f"gpugraph {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser(
        "demo",
        help="train a small residual CNN on MNIST-1D offline and print its modularity curve",
        description="Generate MNIST-1D offline, train a small residual 1-D CNN on the CPU, and print "
        "the layer-wise modularity curve of the trained network beside the untrained one; write "
        "the plot and the JSON, and name the redundant layers.",
    )
    d.add_argument("--out", default="gpugraph-out", help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=_positive, default=12, help="training epochs (default: %(default)s)")
    d.add_argument(
        "--seed", type=int, default=0, help="seed of the weights, the data order and the subsets (default: %(default)s)"
    )
    d.set_defaults(run=_demo)

    c = sub.add_parser(
        "curve",
        help="layer-wise modularity curve of your model on your data",
        description="Capture every layer's output of MODEL on DATA and measure the layer-wise "
        "modularity curve (Lu et al., ECCV 2022). MODEL: a whole module saved with torch.save, or "
        "TorchScript (sequential models only: compiled forwards cannot be hooked). DATA: a .pt file "
        "holding a dict with inputs under x/inputs and labels under y/labels (or a tuple (x, y)), or "
        "an .npz with arrays x and y. Loading a pickled model runs its code: load only files you trust.",
    )
    _model_data_args(c, several=True)
    c.add_argument("--k", type=_positive, default=3, help="neighbours per node (default: %(default)s)")
    c.add_argument(
        "--n", type=_non_negative, default=500, help="samples per subset; 0 = all once (default: %(default)s)"
    )
    c.add_argument("--repeats", type=_positive, default=5, help="disjoint subsets (default: %(default)s)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random subsets (default: %(default)s)")
    c.add_argument(
        "--mode", default="mean", choices=["mean", "max", "mutual"], help="symmetrisation (default: %(default)s)"
    )
    c.add_argument("--tol", type=float, default=0.01, help="redundancy tolerance on dQ (default: %(default)s)")
    c.add_argument("--include-input", action="store_true", help="add the inputs as a first layer, the curve's baseline")
    c.add_argument(
        "--null",
        type=_non_negative,
        default=0,
        metavar="P",
        help="also read each point against P label permutations: a z-score column and a band (default: 0, none)",
    )
    c.add_argument(
        "--attack",
        default=None,
        choices=["fgsm", "pgd"],
        help="also draw the curve of adversarial inputs (L-infinity), beside the clean curve on the "
        "same samples: those classified correctly whose attack succeeded",
    )
    c.add_argument(
        "--attack-labels",
        default="both",
        choices=["true", "predicted", "both"],
        help="read the attacked curve against the true labels (it falls where the model is fooled), "
        "the model's own labels on the attacked inputs (do they still cluster, around the wrong "
        "classes?), or draw both (default: %(default)s)",
    )
    c.add_argument("--eps", type=float, default=None, help="the attack's L-infinity budget (needed with --attack)")
    c.add_argument("--steps", type=_positive, default=10, help="PGD steps (default: %(default)s)")
    c.add_argument(
        "--bounds",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="the inputs' valid range, e.g. 0 1 for images; attacked inputs are clamped into it",
    )
    c.add_argument("--out", default="gpugraph-out", help="output folder for curve.png and curve.json")
    c.set_defaults(run=_curve)

    s = sub.add_parser(
        "similarity",
        help="layer-by-layer similarity matrix of two models on one data file",
        description="Capture the layers of MODEL_A and MODEL_B on the same DATA and compare every "
        "layer of A with every layer of B: GBS layer similarity (Chen et al., 2024), linear CKA, "
        "kNN overlap or mutual kNN. Writes similarity.json and a heatmap similarity.png, and prints, "
        "for each layer of A, the best-matching layer of B.",
    )
    _model_data_args(s, second=True)
    s.add_argument("--measure", default="lsim", choices=["lsim", "cka", "knn_overlap", "mutual_knn"])
    s.add_argument(
        "--k",
        type=_positive,
        default=None,
        help="kNN graphs with k neighbours (lsim default: dense "
        "graphs; knn_overlap and mutual_knn default: 10; not for cka)",
    )
    s.add_argument(
        "--centre",
        action="store_true",
        help="lsim of the centred features (each layer's column means removed first), as CKA centres them",
    )
    s.add_argument("--unbiased", action="store_true", help="cka with the unbiased HSIC estimator")
    s.add_argument("--out", default="gpugraph-out", help="output folder for similarity.png and similarity.json")
    s.set_defaults(run=_similarity)

    g = sub.add_parser(
        "graph",
        help="exact cosine kNN graph of a large .npy matrix, with its measures",
        description="Build the exact cosine k-NN graph of the rows of X (an .npy file, read "
        "memory-mapped a block of rows at a time, so X need not fit in memory) and measure it: "
        "triangles, and with --labels the modularity and the labelled motifs. Writes "
        "DIR/indices.npy, DIR/weights.npy and DIR/summary.json (sizes, measures, seconds, "
        "peak memory). The search saves itself to DIR/knn-checkpoint.npz every minute and on Ctrl-C; "
        "the same command then resumes from there (one process; not under torchrun).",
    )
    g.add_argument("x", help="(N, D) float16/32/64 matrix saved with numpy.save")
    g.add_argument("--k", type=_positive, default=10, help="neighbours per node (default: %(default)s)")
    g.add_argument("--labels", default=None, help="(N,) labels saved with numpy.save (ints or strings)")
    g.add_argument("--memory", default=None, help="memory for the tiles, e.g. 2GB (default: 1/8 of what is free)")
    g.add_argument(
        "--precision",
        default="exact",
        choices=["exact", "bf16", "tf32"],
        help="tile arithmetic; every choice gives the exact graph (default: %(default)s)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--out", default="gpugraph-out", help="output folder (default: %(default)s)")
    g.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar with rows/s and ETA (default: only when stderr is a terminal)",
    )
    g.set_defaults(run=_graph)

    pr = sub.add_parser(
        "prune",
        help="remove the layers the modularity curve marks redundant, fine-tune, report",
        description="Measure the model's modularity curve on held-out data, remove the layers on its "
        "plateaus and dips that keep their input's shape (gpugraph.prune_plan; --by lsim: the layers "
        "whose sample graph changes least), re-estimate its batch-norm statistics, then fine-tune the "
        "pruned model and retrain it from scratch on DATA. Writes the fine-tuned pruned model, a JSON report "
        "(layers removed, parameters, FLOPs per sample, accuracy at each step) and the curve with the "
        "removed layers marked.",
    )
    _model_data_args(pr)
    pr.add_argument(
        "--test",
        default=None,
        help="held-out data file for the curve and the accuracies "
        "(default: a seeded share of DATA, see --test-fraction)",
    )
    pr.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of DATA held out when --test is not given (default: %(default)s)",
    )
    pr.add_argument(
        "--by",
        default="modularity",
        choices=["modularity", "lsim"],
        help="what marks a layer redundant: the rise of the modularity curve (Lu et al.) or how little "
        "the layer changes the samples' graph, 1 - LSim with the last kept layer (GBS) "
        "(default: %(default)s)",
    )
    pr.add_argument(
        "--tol",
        type=float,
        default=None,
        help="a run of layers goes while it changes the measure by "
        "less than this (default: 0.01 for modularity, 0.002 for lsim)",
    )
    pr.add_argument(
        "--count",
        type=_non_negative,
        default=None,
        help="remove exactly this many layers, the least changing first, instead of those under --tol",
    )
    pr.add_argument(
        "--bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="re-estimate the pruned model's batch-norm statistics on DATA before fine-tuning "
        "(train-mode passes, no weight changed; default: on when it has batch norms)",
    )
    pr.add_argument("--epochs", type=_non_negative, default=3, help="fine-tuning epochs (default: %(default)s)")
    pr.add_argument(
        "--retrain-epochs",
        type=_non_negative,
        default=None,
        help="epochs to retrain the pruned model from scratch; 0 skips it (default: --epochs)",
    )
    pr.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, AdamW one-cycle (default: %(default)s)")
    pr.add_argument("--k", type=_positive, default=3, help="neighbours per node of the curve (default: %(default)s)")
    pr.add_argument(
        "--n",
        type=_positive,
        default=500,
        help="samples per subset of the curve, lowered to fit the held-out data (default: %(default)s)",
    )
    pr.add_argument("--repeats", type=_positive, default=5, help="disjoint subsets (default: %(default)s)")
    pr.add_argument(
        "--seed", type=int, default=0, help="seed of the split, the subsets and the training (default: %(default)s)"
    )
    pr.add_argument("--out", default="gpugraph-out", help="output folder (default: %(default)s)")
    pr.set_defaults(run=_prune)

    b = sub.add_parser(
        "bench",
        help="benchmark gpugraph beside its references; compare two runs",
        description="Run each benchmark case beside its reference in the same process (interleaved, "
        "medians after a warm-up) and write one JSON; or compare two such files for regressions "
        "(speed-up ratios, peak memory, deterministic counters).",
    )
    b.add_argument("--suite", default="quick", choices=["quick", "full"], help="quick: under 2 minutes on 2 cores")
    b.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    b.add_argument("--rounds", type=_positive, default=None, help="timed rounds per case (default: 5 quick, 7 full)")
    b.add_argument(
        "--cases",
        type=_names,
        default=None,
        metavar="NAMES",
        help="only the cases of these measures, comma-separated (e.g. knn_graph,modularity; default: all)",
    )
    b.add_argument("--json", default=None, help="write the results here")
    b.set_defaults(run=_bench)
    bsub = b.add_subparsers(dest="bench_command", metavar="compare")
    bc = bsub.add_parser(
        "compare",
        help="compare a new run with a baseline; exit 1 on a regression",
        description="A speed-up regresses when even the top of its 90%% interval over the new "
        "run's rounds is below the baseline's / --factor; below at the median only is "
        "'inconclusive' (too noisy to tell), reported without failing.",
    )
    bc.add_argument("baseline")
    bc.add_argument("new")
    bc.add_argument(
        "--factor",
        type=float,
        default=1.25,
        help="allowed slow-down of the speed-up ratio and growth of peak memory (default: %(default)s)",
    )
    bc.add_argument(
        "--ignore-times",
        action="store_true",
        help="check only deterministic counters and peak memory (times are too noisy on shared machines)",
    )
    bc.set_defaults(run=_bench_compare)
    return p


def _model_data_args(p: argparse.ArgumentParser, second: bool = False, several: bool = False) -> None:
    if several:
        p.add_argument(
            "model",
            nargs="+",
            help="model file (torch.save of the whole module, or TorchScript); "
            "several (e.g. checkpoints of one training run) are measured and drawn together",
        )
    else:
        p.add_argument("model", help="model file (torch.save of the whole module, or TorchScript)")
    if second:
        p.add_argument("model_b", help="second model file (the same file twice compares a model with itself)")
    p.add_argument("data", help="data file (.pt or .npz) with inputs and labels")
    p.add_argument(
        "--layers",
        type=_names,
        action="extend",
        default=None,
        metavar="NAMES",
        help="module names or glob patterns, comma-separated; repeat the option for more "
        "(default: stem and blocks of ResNets, conv blocks or bare convolutions of VGG-like nets, transformer "
        "blocks; see gpugraph.capture)",
    )
    p.add_argument(
        "--reduce",
        default="flatten",
        choices=["flatten", "avgpool", "mean", "cls", "last"],
        help="flatten: every value of a layer's output, as Lu et al. do; avgpool: the mean over "
        "positions per channel, often clearer on small CNNs; for transformers' (B, T, D) tokens: "
        "mean over the kept tokens, cls (the first token), last (the last kept token) "
        "(default: %(default)s)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--max-samples", type=_positive, default=None, help="use only the first N samples")
    p.add_argument("--batch-size", type=_positive, default=256, help="samples per forward pass (default: %(default)s)")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or .py file first, so that a model pickled from it (even from a "
        "script run as __main__) finds its classes; repeatable",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: only when stderr is a terminal)",
    )


def _demo(args) -> int:
    from gpugraph.tools.demo import run

    run(out=args.out, epochs=args.epochs, seed=args.seed)
    return 0


def _curve(args) -> int:
    from gpugraph.models import attacks
    from gpugraph.models.capture import capture
    from gpugraph.studies.curves import modularity_curve

    if args.attack and args.eps is None:
        raise ValueError("--attack needs --eps, the L-infinity budget (e.g. --eps 0.1)")
    _check_files(*args.model)
    device = _device(args.device)
    x, y = load_data(args.data)
    if args.attack and not (torch.is_tensor(y) and not y.dtype.is_floating_point and y.dim() == 1):
        raise ValueError(
            f"--attack needs the labels as class indices (integers) of the model's outputs; "
            f"{args.data} holds {getattr(y, 'dtype', type(y))} labels"
        )
    if args.max_samples:
        x, y = x[: args.max_samples], y[: args.max_samples]
    n = _subset_size(args.n or None, args.repeats, len(x), "the data")
    names = _short_names(args.model)
    curves = {}
    for path, name in zip(args.model, names, strict=True):
        model = load_model(path, device, args.imports)
        inputs = {name: (x, y, {"": y})}
        if args.attack:
            kw = {"bounds": args.bounds, "batch_size": args.batch_size}
            hit = (
                attacks.fgsm(model, x, y, args.eps, **kw)
                if args.attack == "fgsm"
                else attacks.pgd(model, x, y, args.eps, steps=args.steps, **kw)
            )
            keep = hit.mask
            print(
                f"{name}: {args.attack} eps={args.eps}: accuracy {hit.clean_accuracy:.1%} clean, "
                f"{hit.attacked_accuracy:.1%} attacked; {int(keep.sum())} samples correct and fooled"
            )
            n = _subset_size(n, args.repeats, int(keep.sum()), "the attack (correct and fooled samples)")
            which = ["true", "predicted"] if args.attack_labels == "both" else [args.attack_labels]
            inputs = {
                f"{name} clean": (x[keep], y[keep], {"": y[keep]}),
                f"{name} {args.attack}": (hit.x[keep], y[keep], {f" ({w} labels)": hit.labels(y, w) for w in which}),
            }
        for label, (xs, ys, readings) in inputs.items():
            acts = capture(
                model,
                (xs, ys),
                layers=args.layers,
                reduce=args.reduce,
                batch_size=args.batch_size,
                progress=args.progress,
                include_input=args.include_input,
            )
            for suffix, labels in readings.items():
                curves[label + suffix] = modularity_curve(
                    acts,
                    labels,
                    k=args.k,
                    n=n,
                    repeats=args.repeats,
                    seed=args.seed,
                    mode=args.mode,
                    progress=args.progress,
                    null=args.null,
                )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for label, curve in curves.items():
        if len(curves) > 1:
            print(f"\n== {label}")
        print(curve.table(args.tol))
        red = curve.redundant(args.tol)
        print(f"\nredundant layers (dQ < {args.tol}): {', '.join(red) or 'none'}")
    (first, curve), *rest = curves.items()
    curve.plot(out / "curve.png", tol=args.tol, label=first, others=dict(rest))
    if len(curves) == 1:
        curve.to_json(out / "curve.json")
        print(f"wrote {out / 'curve.png'} and {out / 'curve.json'}")
    else:
        _jsonio.dump({label: c.to_dict() for label, c in curves.items()}, out / "curves.json")
        print(f"wrote {out / 'curve.png'} and {out / 'curves.json'} ({len(curves)} curves)")
    return 0


def _subset_size(n: int | None, repeats: int, available: int, what: str) -> int | None:
    """The one rule of every command for a curve's subsets: --n samples each (None: all,
    once), lowered to what ``repeats`` disjoint subsets of the ``available`` samples allow,
    with one line saying so; an error only when that leaves fewer than 2 a subset."""
    if n is None or n * repeats <= available:
        return n
    fitted = available // repeats
    if fitted < 2:
        raise ValueError(
            f"{what} has {available} samples, too few for {repeats} disjoint subsets of at least 2; "
            "lower --repeats or pass --n 0 to use all samples once"
        )
    print(f"{what} has {available} samples: {repeats} subsets of {fitted} (asked for --n {n})")
    return fitted


def _short_names(paths: list[str]) -> list[str]:
    """A label per model file: its stem, or its path where stems repeat."""
    stems = [Path(p).stem for p in paths]
    return stems if len(set(stems)) == len(stems) else list(paths)


def _prune(args) -> int:
    import copy
    import json

    from gpugraph.models.capture import capture
    from gpugraph.models.training import accuracy, fit, recalibrate_bn, reinitialise
    from gpugraph.studies.curves import modularity_curve
    from gpugraph.studies.pruning import TOL, model_cost, prune, prune_plan

    _check_files(args.model)
    if not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must lie in (0, 1), got {args.test_fraction}")
    device = _device(args.device)
    x, y = load_data(args.data)
    if args.max_samples:
        x, y = x[: args.max_samples], y[: args.max_samples]
    if not (torch.is_tensor(y) and not y.dtype.is_floating_point and y.dim() == 1):
        raise ValueError(f"{args.data}: training needs integer class labels 0..C-1, one per sample")
    if args.test:
        x_test, y_test = load_data(args.test)
        held_out = args.test
    else:
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(args.seed))
        cut = round(len(x) * args.test_fraction)
        if cut < 2 * args.repeats or len(x) - cut < 1:
            raise ValueError(
                f"{args.data} has {len(x)} samples: too few to hold out {args.test_fraction:.0%} "
                f"for {args.repeats} subsets; pass --test FILE or a larger --test-fraction"
            )
        x_test, y_test, x, y = x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]
        held_out = f"{cut} samples of {args.data} (seed {args.seed})"
    model = load_model(args.model, device, args.imports)
    n = _subset_size(args.n, args.repeats, len(x_test), "the held-out data")
    acts = capture(
        model,
        (x_test, y_test),
        layers=args.layers,
        reduce=args.reduce,
        batch_size=args.batch_size,
        progress=args.progress,
    )
    curve = modularity_curve(acts, k=args.k, n=n, repeats=args.repeats, seed=args.seed, progress=args.progress)
    example = x_test[:2].to(device)
    plan = prune_plan(
        curve if args.by == "modularity" else acts, model, args.tol, example=example, by=args.by, count=args.count
    )
    curve_tol = plan.tol if args.by == "modularity" else TOL["modularity"]
    print(curve.table(curve_tol))
    print(f"\n{plan}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve.plot(out / "curve.png", tol=curve_tol, removed=plan.layers)
    report = {
        "model": args.model,
        "data": args.data,
        "held_out": held_out,
        "by": plan.by,
        "tol": plan.tol,
        "count": plan.count,
        "curve": curve.to_dict(),
        "removed": plan.layers,
        "redundant": plan.redundant,
        "kept": plan.kept,
    }
    one = x_test[:1].to(device)
    report["before"] = {**model_cost(model, one), "accuracy": accuracy(model, x_test, y_test)}
    if plan.layers:
        pruned = prune(model, plan.layers, example=example)
        report["pruned"] = {**model_cost(pruned, one), "accuracy": accuracy(pruned, x_test, y_test)}
        if args.bn and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in pruned.modules()):
            print("re-estimating the pruned model's batch-norm statistics on the training data")
            pruned = recalibrate_bn(pruned, x)  # prune returned a copy of its own
            report["recalibrated"] = {"accuracy": accuracy(pruned, x_test, y_test)}
        if args.epochs:
            print(f"fine-tuning the pruned model for {args.epochs} epochs")
            tuned = fit(copy.deepcopy(pruned), x, y, args.epochs, lr=args.lr, seed=args.seed, log=print)
            report["finetuned"] = {"epochs": args.epochs, "accuracy": accuracy(tuned, x_test, y_test)}
        else:
            tuned = pruned
        retrain = args.epochs if args.retrain_epochs is None else args.retrain_epochs
        if retrain:
            print(f"retraining the pruned architecture from scratch for {retrain} epochs")
            fresh = fit(
                reinitialise(copy.deepcopy(pruned), args.seed), x, y, retrain, lr=args.lr, seed=args.seed, log=print
            )
            report["retrained"] = {"epochs": retrain, "accuracy": accuracy(fresh, x_test, y_test)}
        torch.save(tuned, out / "pruned.pt")
        for key in ("params", "flops"):
            report[f"{key}_removed"] = (
                1 - report["pruned"][key] / report["before"][key] if report["before"][key] else 0.0
            )
    (out / "prune.json").write_text(json.dumps(report, indent=1) + "\n")
    _print_prune_report(report)
    written = ["pruned.pt"] if plan.layers else []
    print(f"wrote {', '.join(str(out / f) for f in [*written, 'prune.json', 'curve.png'])}")
    return 0


def _print_prune_report(report: dict) -> None:
    if not report["removed"]:
        print("\nnothing to remove at this tolerance: the model is unchanged")
        return
    print(
        f"\nremoved {len(report['removed'])} layer(s): parameters -{report['params_removed']:.1%}, "
        f"FLOPs per sample -{report['flops_removed']:.1%}"
    )
    print(f"{'model':<28}{'params':>12}{'FLOPs/sample':>15}{'accuracy':>10}")
    for key, what in (
        ("before", "original"),
        ("pruned", "pruned, as cut"),
        ("recalibrated", "pruned, BN re-estimated"),
        ("finetuned", "pruned, fine-tuned"),
        ("retrained", "pruned, from scratch"),
    ):
        if key in report:
            cost = report[key if key in ("before", "pruned") else "pruned"]
            print(f"{what:<28}{cost['params']:>12,}{cost['flops']:>15,}{report[key]['accuracy']:>10.1%}")


def _similarity(args) -> int:
    from gpugraph.models.capture import capture
    from gpugraph.similarity.grid import similarity_matrix

    if args.measure == "cka" and args.k is not None:
        raise ValueError(f"--k {args.k} has no meaning with --measure cka (CKA uses no graph); leave it out")
    if args.unbiased and args.measure != "cka":
        raise ValueError(f"--unbiased is an estimator of CKA; it has no meaning with --measure {args.measure}")
    if args.centre and args.measure != "lsim":
        raise ValueError(f"--centre applies to --measure lsim (CKA centres already); not to {args.measure}")
    _check_files(args.model, args.model_b)
    device = _device(args.device)
    x, y = load_data(args.data)
    acts = [
        capture(
            load_model(path, device, args.imports),
            (x, y),
            layers=args.layers,
            reduce=args.reduce,
            max_samples=args.max_samples,
            batch_size=args.batch_size,
            progress=args.progress,
        )
        for path in (args.model, args.model_b)
    ]
    m = similarity_matrix(acts[0], acts[1], measure=args.measure, k=args.k, centre=args.centre, unbiased=args.unbiased)
    print(m.table())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m.plot(out / "similarity.png", names=(f"A ({Path(args.model).name})", f"B ({Path(args.model_b).name})"))
    m.to_json(out / "similarity.json")
    print(f"wrote {out / 'similarity.png'} and {out / 'similarity.json'}")
    return 0


def _graph(args) -> int:
    import time

    from gpugraph.graph.modularity import modularity
    from gpugraph.graph.motifs import motifs, triangles
    from gpugraph.knn.build import knn_graph
    from gpugraph.knn.checkpoint import saved_progress
    from gpugraph.knn.sources import as_source

    src = as_source(args.x, args.x)
    labels = None
    if args.labels is not None:
        if not Path(args.labels).is_file():
            raise FileNotFoundError(f"labels file {args.labels!r} does not exist")
        labels = np.load(args.labels, allow_pickle=False)
        if labels.shape != (src.n,):
            raise ValueError(f"{args.labels} holds labels of shape {labels.shape}; {args.x} has N={src.n} rows")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # started by torchrun: each rank takes its contiguous share of the rows
        return _graph_distributed(args, src, labels)
    device = _device(args.device)
    start = time.perf_counter()
    saved = Path(args.out) / CHECKPOINT
    resumed = saved_progress(saved)
    if resumed:
        print(f"resuming from {saved}: {resumed[0]} of {resumed[1]} tiles were done")
    bar = _rows_bar(src.n, args.progress)
    try:
        g = knn_graph(
            src,
            k=args.k,
            precision=args.precision,
            device=device,
            memory=args.memory,
            progress=bar.tiles if bar is not None else False,
            checkpoint=saved,
        )
    except KeyboardInterrupt:
        done = saved_progress(saved)
        raise KeyboardInterrupt(
            f"{done[0]} of {done[1]} tiles saved to {saved}; the same command resumes from there"
            if done
            else "no tile was finished, nothing saved"
        ) from None
    finally:
        if bar is not None:
            bar.close()
    built = time.perf_counter() - start
    summary = {
        "x": str(args.x),
        "n": src.n,
        "d": src.d,
        "k": args.k,
        "precision": args.precision,
        "memory": args.memory,
        "device": str(device),
        "world_size": 1,
        "seconds_graph": round(built, 3),
        "rows_per_second": round(src.n / built, 1),
        "triangles": triangles(g),
    }
    if labels is not None:
        summary["modularity"] = modularity(g, labels)
        summary["motifs"] = motifs(g, labels)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["peak_memory_bytes"] = _memory.peak_resident()
    _write_graph(Path(args.out), g.indices, g.weights, summary)
    return 0


CHECKPOINT = "knn-checkpoint.npz"  # gpugraph graph's running search, in --out, while it runs


def _graph_distributed(args, src, labels) -> int:
    """`torchrun --nproc-per-node=P -m gpugraph graph ...`: gloo on the CPU, NCCL with
    --device cuda (one GPU per rank, by LOCAL_RANK); rank 0 writes the files."""
    import time

    import torch.distributed as dist

    import gpugraph.distributed as gd

    device = torch.device("cpu")
    if args.device is not None and _device(args.device).type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        start = time.perf_counter()
        rows = gd.shard(src.n)
        bar = _rows_bar(src.n, args.progress) if dist.get_rank() == 0 else None  # rank 0's share of the work
        # this rank's rows: on the CPU a memory-mapped view read a tile at a time by the search,
        # on a GPU copied there whole
        shard = (
            src.rows(rows.start, rows.stop).to(device) if device.type == "cuda" or src.in_memory else src.array[rows]
        )
        g = gd.knn_graph(
            shard,
            k=args.k,
            precision=args.precision,
            memory=args.memory,
            progress=bar.tiles if bar is not None else False,
        )
        if bar is not None:
            bar.close()
        built = time.perf_counter() - start
        summary = {
            "x": str(args.x),
            "n": src.n,
            "d": src.d,
            "k": args.k,
            "precision": args.precision,
            "memory": args.memory,
            "device": device.type,
            "world_size": dist.get_world_size(),
            "seconds_graph": round(built, 3),
            "rows_per_second": round(src.n / built, 1),
            "triangles": gd.triangles(g),
        }
        if labels is not None:
            summary["modularity"] = gd.modularity(g, labels[rows])
            summary["motifs"] = gd.motifs(g, labels[rows])
        indices, weights, _, _ = gd._global_graph(g, None)
        summary["seconds"] = round(time.perf_counter() - start, 3)
        per_rank: list[tuple[int, int]] = [(0, 0)] * dist.get_world_size()
        dist.all_gather_object(per_rank, (_memory.peak_resident() or 0, g.meta["bytes_sent"]))
        summary["peak_memory_bytes"] = max(p for p, _ in per_rank)
        summary["peak_memory_is"] = "the largest of the ranks' resident peaks (each rank is a process)"
        summary["peak_memory_bytes_per_rank"] = [p for p, _ in per_rank]
        summary["bytes_sent_per_rank"] = [b for _, b in per_rank]
        if dist.get_rank() == 0:
            _write_graph(Path(args.out), indices, weights.float(), summary)
    finally:
        dist.destroy_process_group()
    return 0


def _write_graph(out: Path, indices, weights, summary: dict) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "indices.npy", indices.cpu().numpy())
    np.save(out / "weights.npy", weights.cpu().numpy())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for key, value in summary.items():
        print(f"{key:>18}: {value}")
    print(f"wrote {out / 'indices.npy'}, {out / 'weights.npy'} and {out / 'summary.json'}")


class _RowsBar:
    """A tqdm bar in rows (with rows/s and ETA) driven by knn_graph's tile callback."""

    def __init__(self, n: int):
        from tqdm.auto import tqdm

        self.n, self.bar = n, tqdm(total=n, unit="row", unit_scale=True, desc="knn_graph", leave=False)

    def tiles(self, done: int, total: int) -> None:
        self.bar.update(round(self.n * done / total) - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _rows_bar(n: int, progress) -> _RowsBar | None:
    show = progress if progress is not None else sys.stderr.isatty()
    return _RowsBar(n) if show else None


def _bench(args) -> int:
    import json

    from gpugraph.tools import bench

    device = _device(args.device).type
    print(f"gpugraph bench --suite {args.suite} on {device}")
    result = bench.run(args.suite, device, rounds=args.rounds, only=args.cases)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _bench_compare(args) -> int:
    from gpugraph.tools import bench

    lines, failed = bench.compare(bench.load(args.baseline), bench.load(args.new), args.factor, args.ignore_times)
    print("\n".join(lines))
    print("regression" if failed else "no regression")
    return 1 if failed else 0


def _check_files(*paths: str) -> None:
    """Missing model files are reported before any data is read or model run."""
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file {path!r} does not exist")


def _device(name: str | None) -> torch.device:
    from gpugraph._util.convert import resolve_device

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name, torch.device("cpu"))


def load_model(path: str, device: torch.device, imports=()) -> torch.nn.Module:
    """A whole module saved with torch.save, or a TorchScript archive.

    ``imports``: modules or .py files to import first; a model pickled from a script run
    as ``__main__`` finds its classes in them.
    """
    _check_files(path)
    modules = [_import(name) for name in imports]
    if _is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit is deprecated but still loads archives
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(path, map_location=device)
    else:
        try:
            model = torch.load(path, map_location=device, weights_only=False, pickle_module=_pickle_with(modules))
        except (AttributeError, ModuleNotFoundError) as exc:
            raise ValueError(_missing_class_message(path, exc)) from exc
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(
                f"{path} is not a file written by torch.save or torch.jit.save ({exc}); "
                "save the model with torch.save(model, path)"
            ) from exc
        except RuntimeError as exc:
            if "zip" in str(exc).lower() or "magic" in str(exc).lower() or "stream" in str(exc).lower():
                raise ValueError(
                    f"{path} is not a file written by torch.save or torch.jit.save ({exc}); "
                    "save the model with torch.save(model, path)"
                ) from exc
            raise
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"{path} holds a {type(model).__name__}, not a module; save the whole model with "
            "torch.save(model, path) (a state_dict alone has no architecture)"
        )
    return model


def _import(name: str):
    """A module by dotted name, or a .py file by path (imported under its file name)."""
    if name.endswith(".py") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"--import {name}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"--import {name}: Python cannot import this file")
        module = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)  # a script's `if __name__ == "__main__":` part does not run
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ValueError(f"--import {name}: {exc}") from exc


def _pickle_with(modules):
    """A pickle module for torch.load whose unpickler finds classes pickled from a script's
    ``__main__`` in the imported ``modules``."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module_name, name):
            if module_name == "__main__":
                for module in modules:
                    if hasattr(module, name):
                        return getattr(module, name)
                raise AttributeError(f"class {name!r} of module __main__ is not in any --import")
            return super().find_class(module_name, name)

    shim = types.ModuleType("gpugraph_pickle")
    shim.__dict__.update(
        {
            k: getattr(pickle, k)
            for k in ("load", "loads", "dump", "dumps", "Pickler", "UnpicklingError", "HIGHEST_PROTOCOL")
        }
    )
    shim.__dict__["Unpickler"] = Unpickler
    return shim


def _missing_class_message(path: str, exc: Exception) -> str:
    text = str(exc)
    if "__main__" in text:
        return (
            f"{path} was pickled with a class defined in the script that saved it ({text}); pass "
            "--import path/to/that_script.py, or save a TorchScript model instead: "
            "torch.jit.script(model).save(path)"
        )
    return (
        f"{path} needs a class gpugraph cannot import ({text}); pass --import MODULE (or the .py file "
        "that defines it), or save a TorchScript model: torch.jit.script(model).save(path)"
    )


def _is_torchscript(path: str) -> bool:
    """TorchScript archives hold compiled code and constants.pkl; torch.save files do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("/constants.pkl") for name in z.namelist())


def load_data(path: str):
    """Inputs (a tensor) and labels (a tensor, or a NumPy array of strings or objects) from a
    .pt (dict or (x, y) tuple) or .npz file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"data file {path!r} does not exist")
    how = "save it with torch.save({'x': inputs, 'y': labels}, path) or numpy.savez(path, x=..., y=...)"
    if path.endswith(".npz"):
        try:
            with np.load(path) as f:
                data = {key: f[key] for key in f.files}
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"data file {path} is not an .npz archive NumPy can read ({exc}); {how}") from exc
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=False)
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"data file {path} is not a file written by torch.save ({exc}); {how}") from exc
        except RuntimeError as exc:
            if not any(word in str(exc).lower() for word in ("zip", "magic", "stream")):
                raise
            raise ValueError(f"data file {path} is not a file written by torch.save ({exc}); {how}") from exc
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    elif isinstance(data, dict):
        x = next((data[key] for key in ("x", "inputs", "input", "data", "images") if key in data), None)
        y = next((data[key] for key in ("y", "labels", "label", "targets", "target") if key in data), None)
        if x is None or y is None:
            raise ValueError(f"{path} must hold inputs under 'x' and labels under 'y'; found keys {sorted(data)}")
    else:
        raise ValueError(f"{path} must hold a dict {{'x': inputs, 'y': labels}} or a tuple (x, y)")
    x = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if not torch.is_tensor(y):
        y = np.asarray(y)
        y = torch.from_numpy(y) if y.dtype.kind in "iub" else y  # strings, objects stay NumPy
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} inputs but {len(y)} labels")
    return x, y


if __name__ == "__main__":
    sys.exit(main())
