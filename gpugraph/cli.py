"""The command line: ``gpugraph demo``, ``gpugraph curve``, ``gpugraph similarity``."""

from __future__ import annotations

import argparse
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        print(f"gpugraph {args.command}: error: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gpugraph",
        description="Graph analytics of deep-network representations: layer-wise modularity "
        "curves, graph-based similarity between layers and models.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="train a small residual CNN on MNIST-1D offline and print its modularity curve",
                       description="Generate MNIST-1D offline, train a small residual 1-D CNN on the CPU, and print "
                       "the layer-wise modularity curve of the trained network beside the untrained one; write "
                       "the plot and the JSON, and name the redundant layers.")
    d.add_argument("--out", default="gpugraph-out", help="output folder (default: %(default)s)")
    d.add_argument("--epochs", type=int, default=12, help="training epochs (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(run=_demo)

    c = sub.add_parser("curve", help="layer-wise modularity curve of your model on your data",
                       description="Capture every layer's output of MODEL on DATA and measure the layer-wise "
                       "modularity curve (Lu et al., ECCV 2022). MODEL: a whole module saved with torch.save, or "
                       "TorchScript (sequential models only: compiled forwards cannot be hooked). DATA: a .pt file "
                       "holding a dict with inputs under x/inputs and labels under y/labels (or a tuple (x, y)), or "
                       "an .npz with arrays x and y. Loading a pickled model runs its code: load only files you trust.")
    _model_data_args(c)
    c.add_argument("--k", type=int, default=3, help="neighbours per node (default: %(default)s)")
    c.add_argument("--n", type=int, default=500, help="samples per subset; 0 = all once (default: %(default)s)")
    c.add_argument("--repeats", type=int, default=5, help="disjoint subsets (default: %(default)s)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--mode", default="mean", choices=["mean", "max", "mutual"], help="symmetrisation (default: %(default)s)")
    c.add_argument("--tol", type=float, default=0.01, help="redundancy tolerance on dQ (default: %(default)s)")
    c.add_argument("--out", default="gpugraph-out", help="output folder for curve.png and curve.json")
    c.set_defaults(run=_curve)

    s = sub.add_parser("similarity", help="layer-by-layer similarity matrix of two models on one data file",
                       description="Capture the layers of MODEL_A and MODEL_B on the same DATA and compare every "
                       "layer of A with every layer of B: GBS layer similarity (Chen et al., 2024), linear CKA, "
                       "kNN overlap or mutual kNN. Writes similarity.json and a heatmap similarity.png, and prints, "
                       "for each layer of A, the best-matching layer of B.")
    _model_data_args(s, second=True)
    s.add_argument("--measure", default="lsim", choices=["lsim", "cka", "knn_overlap", "mutual_knn"])
    s.add_argument("--k", type=int, default=None, help="kNN graphs with k neighbours (lsim default: dense graphs)")
    s.add_argument("--out", default="gpugraph-out", help="output folder for similarity.png and similarity.json")
    s.set_defaults(run=_similarity)
    return p


def _model_data_args(p: argparse.ArgumentParser, second: bool = False) -> None:
    p.add_argument("model", help="model file (torch.save of the whole module, or TorchScript)")
    if second:
        p.add_argument("model_b", help="second model file (the same file twice compares a model with itself)")
    p.add_argument("data", help="data file (.pt or .npz) with inputs and labels")
    p.add_argument("--layers", nargs="+", default=None, help="module names or glob patterns (default: see docs)")
    p.add_argument("--reduce", default="flatten", choices=["flatten", "avgpool"], help="(default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _demo(args) -> int:
    from gpugraph.demo import run

    run(out=args.out, epochs=args.epochs, seed=args.seed)
    return 0


def _curve(args) -> int:
    from gpugraph.capture import capture
    from gpugraph.curves import modularity_curve

    device = _device(args.device)
    model = load_model(args.model, device)
    x, y = load_data(args.data)
    acts = capture(model, (x, y), layers=args.layers, reduce=args.reduce, max_samples=args.max_samples,
                   batch_size=args.batch_size, progress=not args.no_progress)
    n = args.n or None
    if n is not None and n * args.repeats > acts.n:
        raise ValueError(f"--n {n} x --repeats {args.repeats} needs {n * args.repeats} samples, the data has "
                         f"{acts.n}; lower them or pass --n 0 to use all samples once")
    curve = modularity_curve(acts, k=args.k, n=n, repeats=args.repeats, seed=args.seed, mode=args.mode,
                             progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(curve.table(args.tol))
    red = curve.redundant(args.tol)
    print(f"\nredundant layers (dQ < {args.tol}): {', '.join(red) or 'none'}")
    curve.plot(out / "curve.png", tol=args.tol)
    curve.to_json(out / "curve.json")
    print(f"wrote {out / 'curve.png'} and {out / 'curve.json'}")
    return 0


def _similarity(args) -> int:
    from gpugraph.capture import capture
    from gpugraph.similarity import similarity_matrix

    device = _device(args.device)
    x, y = load_data(args.data)
    acts = [
        capture(load_model(path, device), (x, y), layers=args.layers, reduce=args.reduce,
                max_samples=args.max_samples, batch_size=args.batch_size, progress=not args.no_progress)
        for path in (args.model, args.model_b)
    ]
    m = similarity_matrix(acts[0], acts[1], measure=args.measure, k=args.k)
    width = max(len(n) for n in m.layers_a)
    print(f"{args.measure}: best-matching layer of B for each layer of A")
    for name, best, row in zip(m.layers_a, m.identify(), m.values):
        print(f"{name:<{width}}  ->  {best}  ({row.max():.3f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    m.plot(out / "similarity.png")
    m.to_json(out / "similarity.json")
    print(f"wrote {out / 'similarity.png'} and {out / 'similarity.json'}")
    return 0


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(path: str, device: torch.device) -> torch.nn.Module:
    """A whole module saved with torch.save, or a TorchScript archive."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file {path!r} does not exist")
    if _is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit is deprecated but still loads archives
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(path, map_location=device)
    else:
        model = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"{path} holds a {type(model).__name__}, not a module; save the whole model with "
            "torch.save(model, path) (a state_dict alone has no architecture)"
        )
    return model


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
    if path.endswith(".npz"):
        with np.load(path) as f:
            data = {key: f[key] for key in f.files}
    else:
        data = torch.load(path, map_location="cpu", weights_only=False)
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
