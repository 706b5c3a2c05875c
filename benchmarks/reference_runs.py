"""The reference models: NSA and CutPaste trained at length on a 2-core CPU, with learning curves.

The schedule is fixed here, before training, and never chosen from test metrics:

- the paper's recipe (Adam, lr 1e-3 annealed along a cosine to 1e-6 over every epoch) and the
  paper's 320 epochs (the solar cells: 160), at 128 px instead of 224 (what fits a 2-core CPU:
  3.6 instead of 11 GFLOP per training sample);
- solar cells (``elpv``/``mono``, 376 training cells, 94 more held back to calibrate the
  threshold at a 1 % false-positive rate): the paper's batch of 64, 6 steps an epoch, for half
  the paper's epochs (160: about an hour at the 2-core CPU's 17-18 samples/s, what fits one
  working session; the cosine still runs from 1e-3 to 1e-6 over every epoch);
- the texture with made-up defects (``textures``/``texture_brick``, 60 training images, no
  calibration): batch 16, so that 320 epochs give 1,280 optimizer steps, as many as the paper's
  batch of 64 gives an MVTec AD texture of about 250 images;
- NSA (logistic labels) and CutPaste (end-to-end, the same network) at the same budget.

The learning curve (test metrics every ``CURVE_EVERY`` epochs) is recorded to show how the
model improves; the model kept is the last epoch's whatever the curve says.  Training stops
after each curve point and resumes from its checkpoint (exact on a CPU), so a killed run
resumes where it stopped: run the same command again.

    python benchmarks/reference_runs.py --runs elpv-mono-nsa --output runs/reference
    python benchmarks/reference_runs.py --runs texture-brick-nsa texture-brick-cutpaste --seeds 0 1 2 \\
        --output runs/reference

Each finished run is recorded in ``benchmarks/results/reference-runs.json`` (command, commit,
duration, history, curve, metrics); its ``model.pt`` stays in ``--output``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from nsa_tutorial.checkpoint import load_calibration, load_model
from nsa_tutorial.config import get_config
from nsa_tutorial.evaluate import compute_metrics, decision_metrics, load_test_set, predict_maps, provenance
from nsa_tutorial.files import atomic_write, write_json
from nsa_tutorial.calibration import calibration_split
from nsa_tutorial.layout import check_category, load_category
from nsa_tutorial.metrics import image_scores
from nsa_tutorial.pipeline import calibrate_checkpoint
from nsa_tutorial.sources import resolve_data_root
from nsa_tutorial.train import train
from nsa_tutorial.training_set import SyntheticAnomalyDataset

IMAGE_SIZE = 128
EPOCHS = 320
CURVE_EVERY = 20
RUNS = {
    "elpv-mono-nsa": dict(data_root="elpv", category="mono", method="nsa", batch_size=64, calibration=0.2,
                          epochs=EPOCHS // 2),
    "texture-brick-nsa": dict(data_root="textures", category="texture_brick", method="nsa", batch_size=16,
                              calibration=0.0),
    "texture-brick-cutpaste": dict(data_root="textures", category="texture_brick", method="cutpaste",
                                   batch_size=16, calibration=0.0),
}
RECORD = Path(__file__).parent / "results" / "reference-runs.json"
#: Where the code this process runs came from: read once, at start, since Python keeps the modules
#: it loaded whatever is committed while it trains.
STARTED_AT = provenance()


def run_config(name: str):
    spec = RUNS[name]
    return get_config(spec["category"], method=spec["method"], label="logistic", mode="full",
                      image_size=IMAGE_SIZE, epochs=spec.get("epochs", EPOCHS), batch_size=spec["batch_size"])


def test_metrics(model, config, test, device, threshold=None) -> dict:
    images, masks, labels, has_masks = test
    maps = predict_maps(model, images, config, device)
    result = compute_metrics(labels, maps, masks if has_masks else None, config.score)
    result.update(decision_metrics(labels, image_scores(maps, config.score), threshold))
    return result


def train_with_curve(name: str, seed: int, output: Path, workers: int) -> dict:
    """Train run ``name`` with ``seed`` into ``output/name/seedN``, a curve point every CURVE_EVERY
    epochs; returns the run's record.  Resumes from what the folder holds."""
    spec, config = RUNS[name], run_config(name)
    folder = output / name / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    category = load_category(resolve_data_root(spec["data_root"]), spec["category"])
    check_category(category)
    train_part, held_out = calibration_split(category, spec["calibration"], seed)
    dataset = SyntheticAnomalyDataset(train_part, config, seed=seed)
    images, masks, labels = load_test_set(category, config)
    test = (images, masks, labels, category.has_masks)
    curve_path = folder / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.exists() else []
    done = {point["epoch"] for point in curve}
    for stop in range(CURVE_EVERY, config.epochs + 1, CURVE_EVERY):
        if stop in done:
            continue
        history = train(config, dataset, folder, seed=seed, epochs=stop, num_workers=workers,
                        checkpoint_every=600.0, progress=False)
        model, _ = load_model(folder / "model.pt")
        point = {"epoch": stop, **{k: v for k, v in test_metrics(model, config, test, "cpu").items()
                                   if k in ("image_auroc", "pixel_auroc", "au_pro")},
                 "loss": history["loss"][-1], "train_seconds": sum(history["seconds"]),
                 "commit": STARTED_AT["commit"]}  # the code that trained the epochs up to this point
        curve.append(point)
        atomic_write(curve_path, lambda tmp: tmp.write_text(json.dumps(curve, indent=1)))
        print(f"{name} seed {seed}: epoch {stop}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in point.items() if isinstance(v, float)), flush=True)
    calibration = load_calibration(folder / "model.pt")
    if held_out and calibration is None:
        calibration = calibrate_checkpoint(folder / "model.pt", held_out, 0.01, "cpu")
    model, _ = load_model(folder / "model.pt")
    final = test_metrics(model, config, test, "cpu", (calibration or {}).get("image_threshold"))
    history = json.loads((folder / "history.json").read_text())
    return {"run": name, "seed": seed, "data_root": spec["data_root"], "category": spec["category"],
            "method": config.method, "label": config.label, "image_size": config.image_size,
            "epochs": config.epochs, "batch_size": config.batch_size,
            "training_images": len(dataset), "calibration_images": len(held_out),
            "train_seconds": sum(history["seconds"]), "metrics": final, "calibration": calibration,
            "curve": curve, "history": history, "model": str(folder / "model.pt")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (synthesis beside training)")
    p.add_argument("--record", type=Path, default=RECORD)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    command = "python benchmarks/reference_runs.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    for name in args.runs:
        for seed in args.seeds:
            started = time.time()
            record = train_with_curve(name, seed, args.output, args.workers)
            record.update(command=command, wall_seconds_this_call=time.time() - started, provenance=STARTED_AT)
            records = json.loads(args.record.read_text()) if args.record.exists() else {}
            records[f"{name}/seed{seed}"] = record
            write_json(args.record, records, overwrite=True)
            m = record["metrics"]
            print(f"{name} seed {seed} finished: image AUROC {m['image_auroc']:.4f}, pixel AUROC "
                  f"{m['pixel_auroc']}, AU-PRO {m['au_pro']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
