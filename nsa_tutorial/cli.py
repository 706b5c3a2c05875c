"""The ``nsa-tutorial`` command line: train, evaluate, reproduce the paper's tables.

    nsa-tutorial train --data-root elpv --category mono --mode quick --output runs/mono
    nsa-tutorial evaluate --data-root elpv --category mono --checkpoint runs/mono/model.pt --output runs/mono/metrics.json
    nsa-tutorial reproduce --data-root /data/mvtec --seeds 0 1 2 3 4 --output runs/paper
    nsa-tutorial predict --checkpoint runs/mono/model.pt new_images/ --output runs/mono/predictions
    nsa-tutorial export --checkpoint runs/mono/model.pt --format onnx --output runs/mono/model.onnx

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
              workers: int = 0, checkpoint_every: float = 60.0, calibration: float = 0.0,
              target_fpr: float = 0.01) -> Path:
    """Train ``config`` on its category under ``data_root``; returns the path of ``model.pt``.

    ``calibration``: the share of normal training images held back to calibrate the threshold
    at ``target_fpr`` (:mod:`nsa_tutorial.inference`); 0 trains on all of them (the paper).
    """
    from .data import SyntheticAnomalyDataset, load_category, resolve_data_root
    from .inference import calibrate_checkpoint, calibration_split
    from .train import train

    category = load_category(resolve_data_root(data_root), config.name)
    category, held_out = calibration_split(category, calibration, seed)
    dataset = SyntheticAnomalyDataset(category, config, seed=seed)
    train(config, dataset, output, device=device, seed=seed, num_workers=workers,
          checkpoint_every=checkpoint_every)
    if held_out:
        calibrate_checkpoint(Path(output) / "model.pt", held_out, target_fpr, device)
    return Path(output) / "model.pt"


def evaluate_one(data_root: str, category_name: str, checkpoint: Path, device: Optional[str] = None) -> dict:
    """Metrics of the model in ``checkpoint`` on the test split of ``category_name``."""
    from .data import load_category, resolve_data_root
    from .evaluate import evaluate
    from .inference import load_calibration
    from .train import load_model, pick_device

    device = pick_device(device)
    model, config = load_model(checkpoint, device=device)
    if config.name != category_name:
        print(f"note: the model was trained on {config.name!r}, evaluating it on {category_name!r}")
    calibration = load_calibration(checkpoint) or {}
    result = evaluate(model, load_category(resolve_data_root(data_root), category_name), config, device,
                      threshold=calibration.get("image_threshold"))
    result["image_fpr_target"] = calibration.get("target_fpr")
    return {"category": category_name, "method": config.method, "label": config.label,
            "mode": config.mode, "checkpoint": str(checkpoint), **result}


def cmd_train(args) -> None:
    path = train_one(args.data_root, _config(args), args.output, args.seed, args.device, args.workers,
                     args.checkpoint_every, args.calibration, args.target_fpr)
    print(f"model written to {path}")
    _print_calibration(path)


def cmd_evaluate(args) -> None:
    from .evaluate import write_json

    result = evaluate_one(args.data_root, args.category, args.checkpoint, args.device)
    write_json(result, args.output)
    for key in ("image_auroc", "pixel_auroc", "au_pro"):
        value = result[key]
        print(f"{key:>12}: {'n/a (no masks)' if value is None else f'{100 * value:.1f}'}")
    _print_decisions(result)
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


def _percent(text: str) -> float:
    """``"1%"`` -> 0.01, ``"0.01"`` -> 0.01 (argparse type of --target-fpr)."""
    from .inference import parse_threshold

    value = parse_threshold(f"fpr={text}")
    return value[1]


def _print_calibration(path: Path) -> None:
    from .inference import load_calibration

    c = load_calibration(path)
    if c is None:
        print("no calibration split (--calibration 0): predict needs an explicit --threshold")
        return
    print(f"calibrated on {c['n_images']} held-back normal images: image threshold {c['image_threshold']:.4g} "
          f"(target FPR {100 * c['target_fpr']:g}%, expected {100 * c['expected_fpr']:.2f}%), "
          f"pixel threshold {c['pixel_threshold']:.4g}")
    if c["expected_fpr"] > c["target_fpr"]:
        print(f"note: {c['n_images']} calibration images cannot certify an FPR below "
              f"{100 * c['expected_fpr']:.2f}%; hold back more images (--calibration) for a lower target")


def _print_decisions(result: dict) -> None:
    if result.get("image_threshold") is None:
        print("   decisions: n/a (the model has no calibrated threshold)")
    else:
        values = {k: "n/a" if result[f"image_{k}"] is None else f"{100 * result[f'image_{k}']:.1f}"
                  for k in ("precision", "recall", "f1", "fpr")}
        print(f"   decisions at threshold {result['image_threshold']:.4g} (%): " +
              ", ".join(f"{k} {v}" for k, v in values.items()) +
              f" (target FPR {100 * result['image_fpr_target']:g})")
    print(f"   oracle F1 (%): {100 * result['oracle_image_f1']:.1f} (best threshold on the test labels)")


def cmd_predict(args) -> None:
    from .inference import predict_to_folder

    s = predict_to_folder(args.checkpoint, args.images, args.output, args.threshold, args.pixel_threshold,
                          args.device, args.batch_size)
    skipped = f"; {len(s['skipped'])} unreadable file(s) skipped" if s["skipped"] else ""
    for entry in s["skipped"]:
        print(f"skipped {entry['name']}: {entry['error']}")
    print(f"{s['n_anomalous']} of {s['n_images']} images flagged as anomalous (score > {s['image_threshold']:.4g}, "
          f"{s['threshold_source']}){skipped}; results in {args.output}")


def cmd_export(args) -> None:
    from .export import export_onnx

    print(f"exported to {export_onnx(args.checkpoint, args.output)}")


def _add_use_commands(sub) -> None:
    p = sub.add_parser("predict", help="anomaly scores, decisions, heatmaps and masks for new images")
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt or an exported .onnx file")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--output", type=Path, required=True, help="folder for the results")
    p.add_argument("--threshold", default=None,
                   help="image-score threshold (0-1) or a false-positive rate, e.g. fpr=0.5%%; "
                        "default: the calibrated one")
    p.add_argument("--pixel-threshold", type=float, default=None,
                   help="threshold of the masks; default: calibrated (or --threshold)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help="write a trained model as an ONNX file (normalisation and metadata inside)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsa-tutorial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model on the normal images of one category")
    _add_run_options(p)
    p.add_argument("--category", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration", type=float, default=0.2,
                   help="share of the normal training images held back to calibrate the threshold (0: none)")
    p.add_argument("--target-fpr", type=_percent, default=0.01,
                   help="false-positive rate on normal images the threshold aims at, e.g. 1%% (default)")
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
    _add_use_commands(sub)
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
