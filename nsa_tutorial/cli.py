"""The ``nsa-tutorial`` command line: train, evaluate, reproduce the paper's tables.

Examples::

    nsa-tutorial train --data-root elpv --category mono --mode quick --output runs/mono
    nsa-tutorial evaluate --data-root elpv --category mono --checkpoint runs/mono/model.pt --output runs/mono/metrics.json
    nsa-tutorial reproduce --data-root /data/mvtec --seeds 0 1 2 3 4 --output runs/paper
    nsa-tutorial reproduce --data-root /data/mvtec --shard 0/4 --output runs/paper    # part 0 of 4 (job arrays)
    nsa-tutorial reproduce --data-root /data/mvtec --devices cuda:0,cuda:1 --output runs/paper
    torchrun --nproc-per-node 4 -m nsa_tutorial train ...                          # one run, 4 GPUs
    nsa-tutorial predict --checkpoint runs/mono/model.pt new_images/ --output runs/mono/predictions
    nsa-tutorial export --checkpoint runs/mono/model.pt --format onnx --output runs/mono/model.onnx

``--data-root`` is a folder in MVTec AD layout or the name of an embedded dataset
(``elpv``: solar cells, categories mono/poly; ``textures``: brick/grass/gravel with
made-up defects).  Every command resumes where an interrupted run stopped, and only the
same run: a checkpoint of other settings, seed, package version or data is refused unless
``--restart``.  Results are written atomically and never replace an input or, without
``--overwrite``, an existing file.  Mistakes are reported in one line with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

from .config import LABELS, METHODS, MODES, MVTEC_CLASSES, SIZE_CLIPS, default_mode, get_config
from . import sweep
from .files import check_output, plain_name
from .pipeline import error_message, evaluate_category, is_user_error, refuse_inside_data

#: Numeric options and their ranges (inclusive; None: unbounded), checked when parsed.
RANGES = {"--epochs": (1, None), "--batch-size": (1, None), "--workers": (0, None),
          "--seed": (0, 2**32 - 1), "--seeds": (0, 2**32 - 1),
          "--checkpoint-every": (0.0, None), "--calibration": (0.0, 0.9), "--pixel-threshold": (0.0, 1.0)}


def _config(args, category: str):
    overrides = {key: getattr(args, key) for key in ("epochs", "batch_size", "size_clip", "score")
                 if getattr(args, key) is not None}
    return get_config(category, method=args.method, label=args.label, variant=args.variant,
                      mode=args.mode or default_mode(), image_size=args.image_size, kind=args.kind,
                      like=args.like, **overrides)


def cmd_train(args) -> None:
    from . import distributed
    from .pipeline import train_category

    with distributed.start(args.device) as device:  # under torchrun: one process of a DDP run
        path = train_category(args.data_root, _config(args, args.category), args.output, args.seed, device,
                         args.workers, restart=args.restart, checkpoint_every=args.checkpoint_every,
                         calibration=args.calibration, target_fpr=args.target_fpr)
        if not distributed.is_main():
            return
    print(f"model written to {path}")
    _print_calibration(path)


def cmd_evaluate(args) -> None:
    from .files import write_json

    rules = dict(overwrite=args.overwrite, inputs=[args.checkpoint])
    check_output(args.output, **rules)  # before the work, not after it
    refuse_inside_data(args.output, args.data_root, args.category)
    result = evaluate_category(args.data_root, args.category, args.checkpoint, args.device)
    write_json(args.output, result, **rules)
    for key in ("image_auroc", "pixel_auroc", "au_pro"):
        value = result[key]
        print(f"{key:>12}: {'n/a (no masks)' if value is None else f'{100 * value:.1f}'}"
              + (f" (score: {result['score']} of the map)" if key == "image_auroc" else ""))
    print("image AUROC by score: " + ", ".join(f"{s} {100 * v:.1f}" for s, v in result["image_auroc_by_score"].items()))
    _print_decisions(result)
    print(f"metrics written to {args.output}")


def cmd_reproduce(args) -> None:
    from .sweep import Sweep, reproduce

    names = [plain_name(name, "each --categories entry (a category folder's name)") for name in args.categories]
    configs = [_config(args, name) for name in names]  # every setting checked before the first run
    sweep = Sweep(args.data_root, Path(args.output), args.device, args.workers, args.restart, args.checkpoint_every)
    reproduce(sweep, configs, args.seeds, part=args.shard, devices=args.devices, summarise_only=args.summarise_only)


def _number_option(name: str, cast=int):
    """argparse type for the option ``name`` (``cast``: int or float) with the range in :data:`RANGES`."""
    low, high = RANGES[name]
    noun, show = ("an integer", str) if cast is int else ("a number", lambda v: f"{v:g}")
    expected = f"{noun} >= {show(low)}" if high is None else f"{noun} in [{show(low)}, {show(high)}]"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        # a NaN fails the comparison too
        if value is None or not low <= value or (high is not None and not value <= high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = name
    return parse


def _int_option(name: str):
    return _number_option(name, int)


def _float_option(name: str):
    return _number_option(name, float)


def _image_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 32 or value % 32:
        raise argparse.ArgumentTypeError(f"expected a positive multiple of 32 (the encoder's stride), got {text!r}")
    return value


def _score(text: str) -> str:
    from .metrics import top_fraction

    try:
        top_fraction(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mean', 'max' or 'topP%' with 0 < P < 100 (e.g. top1%), "
                                         f"got {text!r}") from None
    return text


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", required=True, help="MVTec-layout folder, or 'elpv' / 'textures'")
    p.add_argument("--method", default="nsa", choices=METHODS)
    p.add_argument("--label", default="logistic", choices=LABELS, help="NSA label type (eq. 13-14)")
    p.add_argument("--variant", default=None, choices=["A", "B", "C", "D"], help="Table 7 ablation")
    p.add_argument("--mode", default=None, choices=MODES, help="default: full on CUDA, quick otherwise")
    p.add_argument("--kind", default=None, choices=["object", "texture"],
                   help="settings for your own data (default: texture, see the book's 'Beyond MVTec AD')")
    p.add_argument("--like", default=None, choices=MVTEC_CLASSES, metavar="CLASS",
                   help="borrow every setting (Table 4, blending, augmentation, size_clip) of an MVTec AD class")
    p.add_argument("--size-clip", default=None, choices=SIZE_CLIPS,
                   help="eq. 9's clip after resizing: 'paper' (its text) or 'reference' (the authors' code, "
                        "which produced the paper's numbers); default: the config's")
    p.add_argument("--score", type=_score, default=None,
                   help="an image's score from its anomaly map, used by calibration, predict and export: "
                        "'mean' (the paper's, the default), 'max' or 'topP%%' (the mean of the top P %% of pixels)")
    p.add_argument("--epochs", type=_int_option("--epochs"), default=None, help="integer >= 1")
    p.add_argument("--batch-size", type=_int_option("--batch-size"), default=None, help="integer >= 1")
    p.add_argument("--image-size", type=_image_size, default=None, help="model input size, a multiple of 32")
    p.add_argument("--device", default=None, help="cuda, cpu, mps ... (default: cuda if available)")
    p.add_argument("--workers", type=_int_option("--workers"), default=0,
                   help="DataLoader worker processes (integer >= 0)")
    p.add_argument("--restart", action="store_true",
                   help="start afresh instead of resuming from the checkpoint in the output folder")
    p.add_argument("--checkpoint-every", type=_float_option("--checkpoint-every"), default=60.0,
                   metavar="SECONDS", help="at most one checkpoint per SECONDS (0: every epoch); always "
                   "after the last epoch and on Ctrl-C/SIGTERM (default: 60)")
    p.add_argument("--output", type=Path, required=True)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (exit code 2), pointing to ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _percent(text: str) -> float:
    """``"1%"`` -> 0.01, ``"0.01"`` -> 0.01 (argparse type of --target-fpr)."""
    from .calibration import parse_threshold

    value = parse_threshold(f"fpr={text}")
    return value[1]


def _print_calibration(path: Path) -> None:
    from .checkpoint import load_calibration

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
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt, an exported .onnx file, or pretrained:NAME (a shipped reference model)")
    p.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--output", type=Path, required=True, help="folder for the results")
    p.add_argument("--threshold", default=None,
                   help="image-score threshold (0-1) or a false-positive rate, e.g. fpr=0.5%%; "
                        "default: the calibrated one")
    p.add_argument("--pixel-threshold", type=_float_option("--pixel-threshold"), default=None,
                   help="threshold of the masks; default: calibrated (or --threshold)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=_int_option("--batch-size"), default=16)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help="write a trained model as an ONNX file (normalisation and metadata inside)")
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt, or pretrained:NAME")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--output", type=Path, required=True)
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nsa-tutorial", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model on the normal images of one category")
    _add_run_options(p)
    p.add_argument("--category", required=True)
    p.add_argument("--seed", type=_int_option("--seed"), default=0)
    p.add_argument("--calibration", type=_float_option("--calibration"), default=0.2,
                   help="share of the normal training images held back to calibrate the threshold, "
                        "in [0, 0.9] (0: none)")
    p.add_argument("--target-fpr", type=_percent, default=0.01,
                   help="false-positive rate on normal images the threshold aims at, e.g. 1%% (default)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="image AUROC, pixel AUROC and AU-PRO of a trained model")
    p.add_argument("--data-root", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--checkpoint", type=Path, required=True, help="model.pt, or pretrained:NAME")
    p.add_argument("--device", default=None)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("reproduce", help="train and evaluate many categories and seeds; the paper's tables")
    _add_run_options(p)
    p.add_argument("--categories", nargs="+", default=list(MVTEC_CLASSES))
    p.add_argument("--seeds", nargs="+", type=_int_option("--seeds"), default=[0, 1, 2, 3, 4])
    _add_scale_options(p)
    p.set_defaults(func=cmd_reproduce)
    _add_use_commands(sub)
    return parser


def _add_scale_options(p: argparse.ArgumentParser) -> None:
    from .sweep import parse_devices, parse_shard

    p.add_argument("--shard", type=parse_shard, default=None, metavar="K/N",
                   help="run only the K-th of N disjoint parts of the run list (K from 0; e.g. "
                        "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT); all shards share --output")
    p.add_argument("--devices", type=parse_devices, default=None, metavar="DEV,DEV,...",
                   help="one worker process per device, e.g. cuda:0,cuda:1,cuda:2,cuda:3")
    p.add_argument("--summarise-only", action="store_true",
                   help="train nothing: gather the finished runs into the tables and list what is "
                        "missing or failed (exit code 1 until every run is finished)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # usage errors (2) and --help (0), as a return value like every error
        return exit.code
    prefix = f"nsa-tutorial {args.command}"
    from .distributed import under_torchrun

    if args.command != "train" and under_torchrun():
        print(f"{prefix}: error: only 'train' runs under torchrun (one model on several processes); "
              f"run '{args.command}' as one process", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except sweep.SweepFailed as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not is_user_error(error):
            traceback.print_exc()
            print(f"{prefix}: internal error {type(error).__name__}: this is a bug in nsa_tutorial; "
                  "please report it with the traceback above", file=sys.stderr)
            return 1
        print(f"{prefix}: error: {error_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
