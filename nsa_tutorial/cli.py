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
import dataclasses
import pickle
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

from .config import LABELS, METHODS, MODES, MVTEC_CLASSES, SIZE_CLIPS, default_mode, get_config
from .files import check_output, plain_name

#: Numeric options and their ranges (inclusive; None: unbounded), checked when parsed.
RANGES = {"--epochs": (1, None), "--batch-size": (1, None), "--workers": (0, None),
          "--seed": (0, 2**32 - 1), "--seeds": (0, 2**32 - 1),
          "--checkpoint-every": (0.0, None), "--calibration": (0.0, 0.9), "--pixel-threshold": (0.0, 1.0)}


class SweepFailed(RuntimeError):
    """Some runs of ``reproduce`` failed; each one's error is recorded in its run folder."""


def _config(args, category: str):
    overrides = {key: getattr(args, key) for key in ("epochs", "batch_size", "size_clip")
                 if getattr(args, key) is not None}
    return get_config(category, method=args.method, label=args.label, variant=args.variant,
                      mode=args.mode or default_mode(), image_size=args.image_size, kind=args.kind,
                      like=args.like, **overrides)


def _category_folder(data_root: str, name: str) -> Path:
    from .sources import resolve_data_root

    return resolve_data_root(data_root) / name


def _refuse_inside_data(path: Path, data_root: str, name: str) -> None:
    """Outputs never go into the dataset: everything there is an input."""
    folder = _category_folder(data_root, name)
    if folder.is_dir() and Path(path).expanduser().resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"--output {path} lies inside the data folder {folder}; write results elsewhere")


def train_one(data_root: str, config, output: Path, seed: int = 0, device: Optional[str] = None,
              workers: int = 0, restart: bool = False, checkpoint_every: float = 60.0,
              calibration: float = 0.0, target_fpr: float = 0.01) -> Path:
    """Train ``config`` on its category under ``data_root``; returns the path of ``model.pt``.

    The whole category is read first (:func:`nsa_tutorial.layout.check_category`): a corrupt test
    image or a wrong mask stops the run in seconds, not after training.  ``calibration``: the
    share of normal training images held back to calibrate the threshold at ``target_fpr``
    (:mod:`nsa_tutorial.inference`); 0 trains on all of them (the paper).
    """
    from . import distributed
    from .layout import check_category, load_category
    from .sources import resolve_data_root
    from .training_set import SyntheticAnomalyDataset
    from .inference import calibration_split
    from .train import train

    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file; expected a folder for the run")
    with distributed.main_first():  # under torchrun, one process unpacks an embedded dataset
        _refuse_inside_data(output, data_root, config.name)
        category = load_category(resolve_data_root(data_root), config.name)
    check_category(category)
    category, held_out = calibration_split(category, calibration, seed)
    _print_settings(config)
    dataset = SyntheticAnomalyDataset(category, config, seed=seed)
    # train() calibrates on held_out (rank 0 under torchrun) before it writes model.pt
    train(config, dataset, output, device=device, seed=seed, num_workers=workers, resume=not restart,
          checkpoint_every=checkpoint_every, calibration_images=held_out, target_fpr=target_fpr)
    return output / "model.pt"


def _print_settings(config) -> None:
    """The settings of a run (all of them are stored in model.pt) and how it will be scored."""
    from .config import describe
    from .evaluate import centre_cropped

    print(describe(config))
    print("  evaluation: " + ("centre crop, zero-padded back (the paper's protocol for this class)"
                              if centre_cropped(config) else "the whole image"))


def evaluate_one(data_root: str, category_name: str, checkpoint: Path, device: Optional[str] = None) -> dict:
    """Metrics of the model in ``checkpoint`` on the test split of ``category_name``."""
    from .layout import load_category
    from .sources import resolve_data_root
    from .evaluate import evaluate
    from .checkpoint import load_calibration, load_model
    from .runtime import pick_device

    device = pick_device(device)
    model, config = load_model(checkpoint, device=device)
    if config.name != category_name:
        print(f"note: the model was trained on {config.name!r}, evaluating it on {category_name!r}")
    calibration = load_calibration(checkpoint) or {}
    result = evaluate(model, load_category(resolve_data_root(data_root), category_name), config, device,
                      threshold=calibration.get("image_threshold"))
    result["image_fpr_target"] = calibration.get("target_fpr")
    return {"category": category_name, "method": config.method, "label": config.label,
            "mode": config.mode, "checkpoint": str(checkpoint), **result, "config": dataclasses.asdict(config)}


def cmd_train(args) -> None:
    from . import distributed

    with distributed.start(args.device) as device:  # under torchrun: one process of a DDP run
        path = train_one(args.data_root, _config(args, args.category), args.output, args.seed, device,
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
    _refuse_inside_data(args.output, args.data_root, args.category)
    result = evaluate_one(args.data_root, args.category, args.checkpoint, args.device)
    write_json(args.output, result, **rules)
    for key in ("image_auroc", "pixel_auroc", "au_pro"):
        value = result[key]
        print(f"{key:>12}: {'n/a (no masks)' if value is None else f'{100 * value:.1f}'}")
    _print_decisions(result)
    print(f"metrics written to {args.output}")


def _finished(metrics: Path, config, consequence: str = "redoing this run") -> bool:
    """Whether ``metrics`` marks a finished run of ``config``: it parses, is complete and matches."""
    from .evaluate import RESULT_FIELDS
    from .files import read_result

    result, why = read_result(metrics, RESULT_FIELDS)
    if result is not None:
        ours = {"category": config.name, "method": config.method, "label": config.label, "mode": config.mode}
        other = {k: result[k] for k in ours if result[k] != ours[k]}
        then = result.get("config") or {}
        other.update({k: then[k] for k, v in dataclasses.asdict(config).items() if k in then and then[k] != v})
        if not other:
            return True
        why = f"{metrics} belongs to another setting ({other})"
    if why:
        print(f"note: {why}; {consequence}")
    return False


def _run(args, config, run: Path, seed: int) -> None:
    """Train and evaluate one run of a sweep; its ``metrics.json`` marks it finished."""
    from .files import write_json

    checkpoint = train_one(args.data_root, config, run, seed, args.device, args.workers, restart=args.restart,
                           checkpoint_every=args.checkpoint_every)
    result = evaluate_one(args.data_root, config.name, checkpoint, args.device)
    write_json(run / "metrics.json", result, overwrite=True, within=args.output)
    (run / "error.json").unlink(missing_ok=True)


def _record_failure(args, run: Path, error: Exception) -> str:
    from .files import write_json

    message = error_message(error)
    record = {"error": message, "type": type(error).__name__,
              "traceback": None if _is_user_error(error) else traceback.format_exc()}
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "error.json", record, overwrite=True, within=args.output)
    return message


def cmd_reproduce(args) -> None:
    from .evaluate import summarise
    from .sweep import map_on_devices, shard

    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds lists a seed twice: {args.seeds}")
    if args.devices and args.device:
        raise ValueError("give either --device (one process) or --devices (one worker process per device)")
    names = [plain_name(name, "each --categories entry (a category folder's name)") for name in args.categories]
    configs = [_config(args, name) for name in names]  # every setting checked before the first run
    runs = sorted(((config, seed) for config in configs for seed in args.seeds),
                  key=lambda run: (run[0].name, run[1]))  # the same list for every shard
    if args.summarise_only:
        return _report(args, runs, summarise(Path(args.output)))
    mine = shard(runs, *args.shard) if args.shard else runs
    if args.shard:
        print(f"shard {args.shard[0]}/{args.shard[1]}: {len(mine)} of the {len(runs)} runs")
    jobs = [(args, config, seed) for config, seed in mine]
    results = map_on_devices(_attempt, jobs, args.devices) if args.devices else \
        ((job, _attempt(job, args.device)) for job in jobs)
    failed = []
    for (_, config, seed), outcome in results:
        if isinstance(outcome, Exception):  # a worker process died: nothing could record it
            outcome = ("failed", f"{config.name} seed {seed}: FAILED: worker process died ({outcome})")
        status, message = outcome
        print(message, file=sys.stderr if status == "failed" else sys.stdout)
        if status == "failed":
            failed.append(f"{config.name} seed {seed}")
    print(summarise(Path(args.output)))
    if failed:
        raise SweepFailed(f"{len(failed)} of {len(jobs)} runs failed ({', '.join(failed)}); each error is in its "
                          "run folder's error.json and in results.json; run the same command again to "
                          "retry only the failed and missing runs")


def _attempt(job, device) -> tuple[str, str]:
    """Run one run of a sweep unless it is finished or another process holds it:
    ``(status, message)``, status one of done, busy, ok, failed (recorded in its error.json)."""
    from .sweep import claim

    args, config, seed = job
    run = _run_folder(args, config, seed)
    with claim(run) as ours:
        if not ours:
            return "busy", f"{config.name} seed {seed}: being run by another process ({run / '.lock'}); left to it"
        if _finished(run / "metrics.json", config):
            return "done", f"{config.name} seed {seed}: done earlier ({run / 'metrics.json'})"
        try:
            _run(argparse.Namespace(**{**vars(args), "device": device}), config, run, seed)
        except Exception as error:  # recorded; the sweep goes on (KeyboardInterrupt stops it)
            message = _record_failure(args, run, error)
            return "failed", f"{config.name} seed {seed}: FAILED: {message} (recorded in {run / 'error.json'})"
    return "ok", f"{config.name} seed {seed}: finished ({run / 'metrics.json'})"


def _run_folder(args, config, seed: int) -> Path:
    return Path(args.output) / _setting(config) / config.name / f"seed{seed}"


def _report(args, runs, tables: str) -> None:
    """``reproduce --summarise-only``: the tables of what is finished, and what is not."""
    from .files import read_result

    print(tables)
    finished, failed, missing = [], [], []
    for config, seed in runs:
        run, name = _run_folder(args, config, seed), f"{config.name} seed {seed}"
        if _finished(run / "metrics.json", config, "not counted as finished"):
            finished.append(name)
        elif (run / "error.json").exists():
            failed.append(f"{name} ({(read_result(run / 'error.json', ('error',))[0] or {}).get('error')})")
        else:
            missing.append(name)
    print(f"{len(finished)} of {len(runs)} runs finished")
    for label, names in (("failed", failed), ("missing (not run yet, or running)", missing)):
        if names:
            print(f"{label}: {', '.join(names)}")
    if failed or missing:
        raise SweepFailed(f"{len(failed) + len(missing)} of {len(runs)} runs are not finished "
                          f"({len(failed)} failed, {len(missing)} missing)")


def _setting(config) -> str:
    """Run folder name of a method/label/ablation, e.g. ``nsa_logistic`` or ``nsa_logistic_B``."""
    name = f"{config.method}_{config.label}" if config.method == "nsa" else config.method
    return name if config.variant is None else f"{name}_{config.variant}"


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
    from .inference import parse_threshold

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


def _is_user_error(error: BaseException) -> bool:
    """Errors of input, files, data or resources, which a one-line message explains."""
    return isinstance(error, (ValueError, OSError, pickle.UnpicklingError, MemoryError)) \
        or type(error).__name__ == "OutOfMemoryError"  # torch's CUDA out of memory


def error_message(error: BaseException) -> str:
    """One line for the user; train()'s remedy ``resume=False`` becomes the CLI's ``--restart``."""
    from .checkpoint import ResumeError

    if isinstance(error, ResumeError):
        text = f"{error.problem}; or run again with --restart to start afresh (replacing what the folder holds)"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


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
    except SweepFailed as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        if not _is_user_error(error):
            traceback.print_exc()
            print(f"{prefix}: internal error {type(error).__name__}: this is a bug in nsa_tutorial; "
                  "please report it with the traceback above", file=sys.stderr)
            return 1
        print(f"{prefix}: error: {error_message(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
