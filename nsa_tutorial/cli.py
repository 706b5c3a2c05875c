"""The ``nsa-tutorial`` command line: train, evaluate, reproduce the paper's tables.

    nsa-tutorial train --data-root elpv --category mono --mode quick --output runs/mono
    nsa-tutorial evaluate --data-root elpv --category mono --checkpoint runs/mono/model.pt --output runs/mono/metrics.json
    nsa-tutorial reproduce --data-root /data/mvtec --seeds 0 1 2 3 4 --output runs/paper

``--data-root`` is a folder in MVTec AD layout or the name of an embedded dataset
(``elpv``: solar cells, categories mono/poly; ``textures``: brick/grass/gravel with
made-up defects).  Every command resumes where an interrupted run stopped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import LABELS, METHODS, MODES, MVTEC_CLASSES, default_mode, get_config


def _config(args):
    overrides = {"epochs": args.epochs} if args.epochs else {}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    return get_config(args.category, method=args.method, label=args.label, variant=args.variant,
                      mode=args.mode or default_mode(), image_size=args.image_size, **overrides)


def train_one(data_root: str, config, output: Path, seed: int = 0, device: Optional[str] = None,
              workers: int = 0, checkpoint_every: float = 60.0) -> Path:
    """Train ``config`` on its category under ``data_root``; returns the path of ``model.pt``."""
    from .data import SyntheticAnomalyDataset, load_category, resolve_data_root
    from .train import train

    category = load_category(resolve_data_root(data_root), config.name)
    dataset = SyntheticAnomalyDataset(category, config, seed=seed)
    train(config, dataset, output, device=device, seed=seed, num_workers=workers,
          checkpoint_every=checkpoint_every)
    return Path(output) / "model.pt"


def evaluate_one(data_root: str, category_name: str, checkpoint: Path, device: Optional[str] = None) -> dict:
    """Metrics of the model in ``checkpoint`` on the test split of ``category_name``."""
    from .data import load_category, resolve_data_root
    from .evaluate import evaluate
    from .train import load_model, pick_device

    device = pick_device(device)
    model, config = load_model(checkpoint, device=device)
    if config.name != category_name:
        print(f"note: the model was trained on {config.name!r}, evaluating it on {category_name!r}")
    result = evaluate(model, load_category(resolve_data_root(data_root), category_name), config, device)
    return {"category": category_name, "method": config.method, "label": config.label,
            "mode": config.mode, "checkpoint": str(checkpoint), **result}


def cmd_train(args) -> None:
    path = train_one(args.data_root, _config(args), args.output, args.seed, args.device, args.workers,
                     args.checkpoint_every)
    print(f"model written to {path}")


def cmd_evaluate(args) -> None:
    from .evaluate import write_json

    result = evaluate_one(args.data_root, args.category, args.checkpoint, args.device)
    write_json(result, args.output)
    for key in ("image_auroc", "pixel_auroc", "au_pro"):
        value = result[key]
        print(f"{key:>12}: {'n/a (no masks)' if value is None else f'{100 * value:.1f}'}")
    print(f"metrics written to {args.output}")


def cmd_reproduce(args) -> None:
    from .evaluate import write_json
    from .evaluate import summarise

    for name in args.categories:
        for seed in args.seeds:
            args.category = name
            config = _config(args)
            run = Path(args.output) / _setting(config) / name / f"seed{seed}"
            metrics = run / "metrics.json"
            if metrics.exists():
                print(f"{name} seed {seed}: done earlier ({metrics})")
                continue
            checkpoint = train_one(args.data_root, config, run, seed, args.device, args.workers,
                                   args.checkpoint_every)
            write_json(evaluate_one(args.data_root, name, checkpoint, args.device), metrics)
    print(summarise(Path(args.output)))


def _setting(config) -> str:
    """Run folder name of a method/label/ablation, e.g. ``nsa_logistic`` or ``nsa_logistic_B``."""
    name = f"{config.method}_{config.label}" if config.method == "nsa" else config.method
    return name if config.variant is None else f"{name}_{config.variant}"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", required=True, help="MVTec-layout folder, or 'elpv' / 'textures'")
    p.add_argument("--method", default="nsa", choices=METHODS)
    p.add_argument("--label", default="logistic", choices=LABELS, help="NSA label type (eq. 13-14)")
    p.add_argument("--variant", default=None, choices=["A", "B", "C", "D"], help="Table 7 ablation")
    p.add_argument("--mode", default=None, choices=MODES, help="default: full on CUDA, quick otherwise")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None, help="model input size, a multiple of 32")
    p.add_argument("--device", default=None, help="cuda, cpu, mps ... (default: cuda if available)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                   help="at most one checkpoint per SECONDS (0: every epoch); always after the last "
                        "epoch and on Ctrl-C/SIGTERM (default: 60)")
    p.add_argument("--output", type=Path, required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsa-tutorial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model on the normal images of one category")
    _add_run_options(p)
    p.add_argument("--category", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="image AUROC, pixel AUROC and AU-PRO of a trained model")
    p.add_argument("--data-root", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--device", default=None)
    p.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("reproduce", help="train and evaluate many categories and seeds; the paper's tables")
    _add_run_options(p)
    p.add_argument("--categories", nargs="+", default=list(MVTEC_CLASSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"nsa-tutorial {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
