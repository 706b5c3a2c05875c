"""The Python parts of ``benchmarks/gpu_check.sh`` (run that script, not this file).

    python benchmarks/gpu_check.py synthesis PART.json   # batched synthesis throughput on CUDA
    python benchmarks/gpu_check.py merge PARTS_DIR       # parts -> benchmarks/results/gpu-check-<gpu>.json
    python benchmarks/gpu_check.py ab_size_clip PART.json  # optional: full-mode size_clip A/B ($NSA_MVTEC_ROOT)

``merge`` puts whatever parts exist into one file with provenance (GPU, commit, date), the
projected full-mode training time of MVTec AD (:func:`bench_training.projected_minutes`) and the
list of failed parts, and copies it into ``$OUT`` when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import torch

from bench_training import MVTEC_TRAIN_IMAGES, projected_minutes
from nsa_tutorial.files import write_json
from nsa_tutorial.evaluate import provenance

RESULTS = Path(__file__).parent / "results"
SYNTHESIS_GOAL = 5000  # samples/s of batched synthesis at 224 px on an H200: the goal this check reports against


def synthesis(path: Path) -> None:
    """Batched NSA synthesis (bottle settings, 224 px) at batches of 64 and 256, and one training
    step at batch 64 for comparison."""
    from bench_batched import time_batched, time_train_step
    from bench_synthesis import PHOTOS, images
    from nsa_tutorial.config import get_config

    config, cuda = get_config("bottle"), torch.device("cuda")
    pool = images(PHOTOS, 224)
    result = {"class_settings": "bottle", "size": 224, "goal_samples_per_s": SYNTHESIS_GOAL}
    for batch in (64, 256):
        result[f"batch_{batch}"] = time_batched(config, pool, batch, cuda, repeats=10)
        print(f"batched synthesis, batch {batch}: {result[f'batch_{batch}']['samples_per_s']:.0f} samples/s")
    result["train_step_batch_64_s"] = time_train_step(config, 64, cuda)
    result["peak_memory_mb"] = torch.cuda.max_memory_allocated(cuda) / 2**20
    write_json(path, result)


AB_CLASSES = ("screw", "capsule", "pill", "carpet")  # where the two rules differ most, and a texture


def ab_size_clip(path: Path, cli=None) -> None:
    """The size_clip A/B in full mode on MVTec AD ($NSA_MVTEC_ROOT): ``reproduce`` once per rule
    (resumable, one output folder per rule under $NSA_AB_OUTPUT), then the summaries of both."""
    from nsa_tutorial.cli import main
    from nsa_tutorial.config import SIZE_CLIPS

    root = os.environ.get("NSA_MVTEC_ROOT")
    if not root or not Path(root).is_dir():
        print("ab_size_clip skipped: set NSA_MVTEC_ROOT to an MVTec AD folder to run the full-mode size_clip A/B "
              f"({', '.join(AB_CLASSES)})" + (f"; {root} is not a folder" if root else ""))
        return
    cli, out = cli or main, Path(os.environ.get("NSA_AB_OUTPUT", "runs/ab_size_clip"))
    seeds = os.environ.get("NSA_AB_SEEDS", "0 1 2").split()
    workers = str(min(os.cpu_count() or 1, 16))
    result = {"classes": list(AB_CLASSES), "seeds": seeds, "mode": "full", "output": str(out)}
    for clip in SIZE_CLIPS:
        folder = out / clip
        code = cli(["reproduce", "--data-root", root, "--categories", *AB_CLASSES, "--seeds", *seeds,
                    "--mode", "full", "--size-clip", clip, "--workers", workers, "--output", str(folder)])
        summary = json.loads((folder / "results.json").read_text()) if (folder / "results.json").exists() else {}
        result[clip] = {"exit_code": code, "size_clip": summary.get("size_clip"),
                        "nsa_logistic": summary.get("nsa_logistic", {}), "failed": summary.get("failed", [])}
        write_json(path, result, overwrite=True)


def _plain_s_per_image(part: dict, n: int) -> float | None:
    """Seconds per image of the whole loop, unwrapped run, synthesis on the GPU, ``n`` images."""
    for run in part.get("runs", []):
        if run["synthesis_on_device"] and run["images"] == n:
            return run.get("plain", run)["loop_s_per_epoch"] / n
    return None


def projection(parts: dict) -> dict:
    """MVTec AD full mode (per-class epochs of config.py) from the measured whole-loop speed."""
    per_image = {224: _plain_s_per_image(parts.get("train_224", {}), MVTEC_TRAIN_IMAGES["bottle"]),
                 256: _plain_s_per_image(parts.get("train_256", {}), MVTEC_TRAIN_IMAGES["carpet"])}
    note = "from the 224 px and 256 px runs"
    if per_image[224] is None:
        return {"note": "no training run with synthesis on the GPU at 224 px: no projection"}
    if per_image[256] is None:
        per_image[256] = per_image[224] * (256 / 224) ** 2
        note = "256 px scaled from the 224 px run by the pixel count (the 256 px run is missing)"
    minutes = projected_minutes(per_image, fixed_s_per_epoch=0.0)  # fixed costs are in the loop time
    return {"minutes": minutes, "s_per_image": {str(k): v for k, v in per_image.items()}, "note": note}


def merge(parts_dir: Path) -> Path:
    parts = {p.stem: json.loads(p.read_text()) for p in sorted(parts_dir.glob("*.json"))}
    failed = (parts_dir / "failed").read_text().split() if (parts_dir / "failed").exists() else []
    info = provenance()
    if info["commit"] is None:  # a copy of the checkout without .git
        info["commit"] = os.environ.get("NSA_COMMIT")
    name = re.sub(r"[^a-z0-9]+", "-", (info["gpu"] or "no-gpu").lower()).strip("-")
    result = {**info, "failed_parts": failed, **parts, "projection": projection(parts)}
    path = write_json(RESULTS / f"gpu-check-{name}.json", result)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["OUT"]) / path.name)
    minutes = result["projection"].get("minutes")
    if minutes:
        print(f"projected full mode: bottle {minutes['bottle_320_epochs_of_209']:.1f} min, "
              f"all 15 MVTec AD classes {minutes['all_15']:.1f} min ({path})")
    return path


if __name__ == "__main__":
    COMMANDS = {"synthesis": synthesis, "merge": merge, "ab_size_clip": ab_size_clip}
    if len(sys.argv) != 3 or sys.argv[1] not in COMMANDS:
        sys.exit("usage: gpu_check.py synthesis PART.json | merge PARTS_DIR | ab_size_clip PART.json")
    COMMANDS[sys.argv[1]](Path(sys.argv[2]))
