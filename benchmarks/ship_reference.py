"""Ship a finished reference run (``benchmarks/reference_runs.py``) as a pretrained model.

    python benchmarks/ship_reference.py --runs elpv-mono-nsa --output runs/reference

For each run: the weights go to ``weights/NAME.safetensors`` in float16 if that moves the test
set's anomaly maps by less than ``MAP_ATOL`` and the image AUROC by less than ``AUROC_ATOL``
(measured here, recorded in the manifest), else in float32.  The shipped weights are then
calibrated again on the run's held-back images and scored on the test set, so that the
manifest's calibration and metrics are those of the file that ships.  The manifest entry
(``nsa_tutorial/pretrained.json``) also holds the file's SHA-256, the config, the training
record (command, commit, epochs, duration, learning curve) of ``benchmarks/results/reference-runs.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import reference_runs  # noqa: E402  (the runs' definitions)
from nsa_tutorial import pretrained as shipped  # noqa: E402
from nsa_tutorial.evaluate import compute_metrics, decision_metrics, load_test_set, predict_maps  # noqa: E402
from nsa_tutorial.files import atomic_write  # noqa: E402
from nsa_tutorial.calibration import calibrate, calibration_split  # noqa: E402
from nsa_tutorial.inference import torch_predictor  # noqa: E402
from nsa_tutorial.layout import load_category  # noqa: E402
from nsa_tutorial.metrics import image_scores  # noqa: E402
from nsa_tutorial.sources import resolve_data_root  # noqa: E402
from nsa_tutorial.checkpoint import load_model  # noqa: E402

MAP_ATOL = 0.01  # largest change of an anomaly-map pixel (a probability in [0, 1]) float16 may cause
AUROC_ATOL = 0.001
WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def _load_weights(config, path: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    from nsa_tutorial.model import build_model

    model = build_model(config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()})
    return model.eval()


def ship(name: str, seed: int, output: Path, record: dict) -> dict:
    spec = reference_runs.RUNS[name]
    model, config = load_model(output / name / f"seed{seed}" / "model.pt")
    category = load_category(resolve_data_root(spec["data_root"]), spec["category"])
    images, masks, labels = load_test_set(category, config)
    maps32 = predict_maps(model, images, config)
    with tempfile.TemporaryDirectory() as tmp:
        shipped.save_weights(model, Path(tmp) / "w.safetensors", half=True)
        maps16 = predict_maps(_load_weights(config, Path(tmp) / "w.safetensors"), images, config)
    map_change = float(np.abs(maps16 - maps32).max())
    auroc_change = abs(compute_metrics(labels, maps16, None, config.score)["image_auroc"]
                       - compute_metrics(labels, maps32, None, config.score)["image_auroc"])
    half = map_change < MAP_ATOL and auroc_change < AUROC_ATOL
    WEIGHTS.mkdir(exist_ok=True)
    path = WEIGHTS / f"{name}.safetensors"
    digest = shipped.save_weights(model, path, half=half)
    model = _load_weights(config, path)
    _, held_out = calibration_split(category, spec["calibration"], seed)
    calibration = calibrate(torch_predictor(model, config), held_out, 0.01) if held_out else None
    maps = predict_maps(model, images, config)
    metrics = compute_metrics(labels, maps, masks if category.has_masks else None, config.score)
    metrics.update(decision_metrics(labels, image_scores(maps, config.score),
                                    (calibration or {}).get("image_threshold")))
    return {"file": path.name, "sha256": digest, "bytes": path.stat().st_size,
            "dtype": "float16" if half else "float32",
            "float16_check": {"max_map_change": map_change, "image_auroc_change": auroc_change,
                              "map_atol": MAP_ATOL, "auroc_atol": AUROC_ATOL, "test_images": len(images)},
            "data_root": spec["data_root"], "category": spec["category"], "seed": seed,
            "config": dataclasses.asdict(config), "calibration": calibration, "metrics": metrics,
            "training": training_record(record[f"{name}/seed{seed}"])}


def training_record(run: dict) -> dict:
    """What the manifest keeps of a run's record: how it was trained, its learning curve and its
    per-epoch history (loss, learning rate, speed; chapter 6 plots it when it loads the model)."""
    return {k: run[k] for k in ("command", "provenance", "epochs", "batch_size", "image_size", "training_images",
                                "calibration_images", "train_seconds", "curve", "history")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", choices=sorted(reference_runs.RUNS), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="the --output of reference_runs.py")
    p.add_argument("--training-only", action="store_true",
                   help="refresh only the manifest's training record (weights, metrics and calibration untouched)")
    args = p.parse_args(argv)
    record = json.loads(reference_runs.RECORD.read_text())
    manifest = json.loads(shipped.MANIFEST.read_text())
    if args.training_only:
        for name in args.runs:
            manifest["models"][name]["training"] = training_record(record[f"{name}/seed{args.seed}"])
        atomic_write(shipped.MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))
        return 0
    if args.output is None:
        p.error("--output is required (the --output of reference_runs.py)")
    for name in args.runs:
        manifest["models"][name] = entry = ship(name, args.seed, args.output, record)
        print(f"{name}: {entry['dtype']} ({entry['bytes'] / 1e6:.1f} MB), max map change in float16 "
              f"{entry['float16_check']['max_map_change']:.2e}, image AUROC {entry['metrics']['image_auroc']:.4f}")
    atomic_write(shipped.MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))
    total = sum(f.stat().st_size for f in WEIGHTS.glob("*.safetensors"))
    print(f"weights/ holds {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
