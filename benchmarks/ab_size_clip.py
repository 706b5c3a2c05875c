"""A/B of eq. 9's clip after resizing (``size_clip``), and the settings for a user's own data.

    OMP_NUM_THREADS=1 python benchmarks/ab_size_clip.py [--work /tmp/ab-size-clip] [--seeds 0 1 2]
        [--epochs 16] [--max-steps 4] [--json benchmarks/results/ab-size-clip-cpu.json]

One fixed budget for every run (quick mode: 128 px, batch 16, ``--epochs`` epochs of at most
``--max-steps`` steps, one CPU thread), trained with :func:`nsa_tutorial.train.train` and scored with the package's own
evaluation.  Two questions:

* ``size_clip``: ``"paper"`` against ``"reference"`` (the authors' rule) on the embedded
  textures (pixel masks: image AUROC, pixel AUROC, AU-PRO) and the elpv mono solar cells
  (image labels only), each with the settings ``get_config`` gives them (textures: texture
  settings, evaluated whole; solar cells: object settings, explicitly).
* own data: the same textures treated as a user's own data under the old defaults (object
  settings, i.e. source-gradient blending, the paper's object crops in training and no flips,
  evaluated as the paper's objects with a zero-padded centre crop: arm ``own_object_crop``),
  with object settings as ``get_config`` gives own data today (no centre crop: trained and
  scored whole, ``own_object_whole``), against texture settings scored whole (the ``ab`` runs).

Resumable: every run writes its ``metrics.json`` atomically into ``--work``; a run whose
metrics exist and match its config is skipped, an interrupted training resumes from its
checkpoint.  The summary (per-run values, mean and standard error over seeds, provenance) is
rewritten atomically after every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nsa_tutorial.config import get_config
from nsa_tutorial.layout import load_category
from nsa_tutorial.sources import resolve_data_root
from nsa_tutorial.training_set import SyntheticAnomalyDataset
from nsa_tutorial.evaluate import METRICS, evaluate, mean_and_se, provenance
from nsa_tutorial.files import read_result, write_json
from nsa_tutorial.checkpoint import ResumeError, load_model
from nsa_tutorial.train import train

TEXTURES = ("texture_brick", "texture_grass", "texture_gravel")
DATASETS = {**{name: "textures" for name in TEXTURES}, "mono": "elpv"}
SIZE_CLIPS = ("paper", "reference")


def plan(seeds, epochs: int) -> list:
    """Every run: ``(arm, dataset, category, seed, config, protocol)``."""
    runs = []
    for name, root in DATASETS.items():
        kind = "object" if root == "elpv" else None  # aligned solar cells keep object settings
        for clip in SIZE_CLIPS:
            for seed in seeds:
                runs.append((f"ab_{clip}", root, name, seed,
                             get_config(name, mode="quick", kind=kind, size_clip=clip, epochs=epochs), "whole"))
    paper_object = get_config("bottle", mode="quick")  # the paper's object geometry: centre crop in training
    for name in TEXTURES:
        config = get_config(name, mode="quick", kind="object", size_clip="paper", epochs=epochs)
        old = config.replace(resize=paper_object.resize, crop=paper_object.crop)
        for arm, protocol, arm_config in (("own_object_crop", "crop", old), ("own_object_whole", "whole", config)):
            for seed in seeds:
                runs.append((arm, "textures", name, seed, arm_config, protocol))
    return runs


def run_one(work: Path, max_steps: int, commit: str, arm, root, name, seed, config, protocol) -> dict:
    folder = work / arm / name / f"seed{seed}"
    metrics_path = folder / "metrics.json"
    expected = {"config": dataclasses.asdict(config), "protocol": protocol, "max_steps_per_epoch": max_steps}
    done, _ = read_result(metrics_path, tuple(expected))
    if done is not None and all(done[k] == v for k, v in expected.items()):
        return done
    category = load_category(resolve_data_root(root), name)
    start = time.time()
    dataset = SyntheticAnomalyDataset(category, config, seed=seed)
    def train_run() -> None:
        train(config, dataset, folder / "train", device="cpu", seed=seed, progress=False,
              checkpoint_every=0, max_steps_per_epoch=max_steps)

    try:  # an interrupted run resumes from its checkpoint
        train_run()
    except ResumeError:  # the folder of an earlier, other setting (a changed config): start afresh
        shutil.rmtree(folder / "train")
        train_run()
    model, _ = load_model(folder / "train" / "model.pt")
    train_s = time.time() - start
    result = evaluate(model, category, config)  # the config's geometry decides: crop set, centre-crop protocol
    record = {"arm": arm, "category": name, "seed": seed, "protocol": protocol,
              **{m: result[m] for m in METRICS}, "resolution": result["resolution"],
              "train_s": round(train_s, 1), "total_s": round(time.time() - start, 1), "commit": commit, **expected}
    write_json(metrics_path, record, overwrite=True, within=work)
    return record


def summary(records: list, args, started: str, origin: dict) -> dict:
    table: dict = {}
    for r in records:
        table.setdefault(r["arm"], {}).setdefault(r["category"], []).append(r)
    stats = {arm: {name: {m: dict(zip(("mean", "se"), mean_and_se([r[m] for r in rs])), seeds=len(rs))
                          for m in METRICS if all(r[m] is not None for r in rs)}
                   for name, rs in cats.items()} for arm, cats in table.items()}
    # the mean over the three textures, per seed, then mean and SE over seeds
    pooled = {}
    for arm, cats in table.items():
        names = [n for n in TEXTURES if n in cats]
        seeds = sorted(set.intersection(*(set(r["seed"] for r in cats[n]) for n in names))) if names else []
        if names and seeds:
            pooled[arm] = {m: dict(zip(("mean", "se"), mean_and_se(
                [np.mean([next(r[m] for r in cats[n] if r["seed"] == s) for n in names]) for s in seeds])),
                seeds=len(seeds)) for m in METRICS}
    return {"description": "size_clip A/B (paper vs reference) and own-data settings, quick mode, one fixed "
                           "budget per run; mean and standard error over seeds",
            "command": "OMP_NUM_THREADS=1 python " + shlex.join(sys.argv),
            "budget": {"mode": "quick", "image_size": 128, "batch_size": 16, "epochs": args.epochs,
                       "max_steps_per_epoch": args.max_steps,
                       "threads": torch.get_num_threads(), "device": "cpu"},
            "seeds": args.seeds, "started": started, "provenance": {**origin, **({"note": args.note} if args.note else {})},
            # runs reused from an earlier invocation keep the commit they recorded ("unrecorded" before
            # runs recorded one)
            "run_commits": {c: sum(r.get("commit", "unrecorded") == c for r in records)
                            for c in sorted({r.get("commit", "unrecorded") for r in records})},
            "arms": {"ab_paper": "size_clip='paper', get_config's settings (textures: texture kind; mono: object)",
                     "ab_reference": "size_clip='reference', same settings",
                     "own_object_crop": "textures as own data, old defaults: object settings, the paper's "
                                        "centre crop in training and evaluation",
                     "own_object_whole": "textures as own data, object settings as get_config gives own data "
                                         "(no centre crop): trained and scored whole"},
            "stats": stats, "textures_pooled": pooled,
            "runs": sorted(({k: v for k, v in r.items() if k != "config"} for r in records),
                           key=lambda r: (r["arm"], r["category"], r["seed"]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ab-size-clip"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=4, help="steps per epoch at most (a fixed budget)")
    parser.add_argument("--only", nargs="*", default=None, help="arms to run (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many runs (timing)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ab-size-clip-cpu.json"))
    parser.add_argument("--note", default=None, help="a line of context stored with the provenance")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    origin = provenance()  # the code this process runs: its commit when it started
    records = []
    runs = [r for r in plan(args.seeds, args.epochs) if args.only is None or r[0] in args.only]
    for i, run in enumerate(runs[:args.limit]):
        record = run_one(args.work, args.max_steps, origin["commit"], *run)
        records.append(record)
        print(f"[{i + 1}/{len(runs)}] {record['arm']} {record['category']} seed {record['seed']}: "
              + ", ".join(f"{m} {record[m]:.3f}" for m in METRICS if record[m] is not None)
              + f" ({record['total_s']} s)", flush=True)
        write_json(args.json, summary(records, args, started, origin), overwrite=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
