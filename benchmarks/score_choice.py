"""Which image score for a user's own data: the map's mean (the paper's), its maximum, or the mean
of its top 1 % of pixels, measured on the embedded data.

    python benchmarks/score_choice.py [--work /tmp/score-choice] [--seeds 0 1 2] [--epochs 16]
        [--max-steps 4] [--json benchmarks/results/score-choice-cpu.json]

The score is computed from the anomaly map after training, so one model per (dataset, seed)
serves every score: each is trained once at a fixed quick budget (128 px, batch 16, ``--epochs``
epochs of at most ``--max-steps`` steps) with the settings ``get_config`` gives the data (the
textures with made-up defects and masks, whose defects cover 0.1-1.7 % of an image; the elpv
mono solar cells with object settings), its test maps computed once and the image AUROC taken
under every score.  The shipped reference models (:mod:`nsa_tutorial.pretrained`) are scored the
same way.

The rule that picks the own-data default is fixed here, before measuring: the score with the
highest image AUROC averaged over the four datasets (each dataset's mean over seeds) wins if
it beats the paper's mean by more than one standard error of that difference (over seeds,
paired); otherwise the paper's mean stays the default.

Resumable: each run's maps-derived numbers are written atomically to ``--work``; finished runs
are skipped, an interrupted training resumes from its checkpoint.  The summary is rewritten
after every run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nsa_tutorial.config import get_config
from nsa_tutorial.evaluate import load_test_set, mean_and_se, predict_maps, provenance
from nsa_tutorial.files import read_result, write_json
from nsa_tutorial.checkpoint import load_model
from nsa_tutorial.layout import load_category
from nsa_tutorial.metrics import SCORES, image_auroc
from nsa_tutorial.pretrained import manifest, pretrained
from nsa_tutorial.sources import resolve_data_root
from nsa_tutorial.train import train
from nsa_tutorial.training_set import SyntheticAnomalyDataset

DATASETS = {"texture_brick": "textures", "texture_grass": "textures", "texture_gravel": "textures", "mono": "elpv"}


def category_of(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the solar cells have no ground_truth folder
        return load_category(resolve_data_root(DATASETS[name]), name)


def aurocs(model, config, category) -> dict:
    images, _, labels = load_test_set(category, config)
    maps = predict_maps(model, images, config)
    return {score: image_auroc(labels, maps, score) for score in SCORES}


def one_run(name: str, seed: int, args) -> dict:
    folder = args.work / name / f"seed{seed}"
    done, _ = read_result(folder / "aurocs.json", SCORES)
    if done is not None:
        return done
    kind = "object" if DATASETS[name] == "elpv" else None  # aligned solar cells keep object settings
    config = get_config(name, kind=kind, mode="quick", image_size=128, batch_size=16, epochs=args.epochs)
    category = category_of(name)
    train(config, SyntheticAnomalyDataset(category, config, seed=seed), folder, seed=seed,
          max_steps_per_epoch=args.max_steps, progress=False)
    model, config = load_model(folder / "model.pt")
    result = aurocs(model, config, category)
    write_json(folder / "aurocs.json", result, overwrite=True)
    return result


def choose(per_dataset: dict) -> dict:
    """The rule of the module docstring, on ``{dataset: {score: [auroc per seed]}}``."""
    average = {s: float(np.mean([np.mean(v[s]) for v in per_dataset.values()])) for s in SCORES}
    best = max(SCORES, key=average.get)
    # paired over seeds: the difference to the mean, averaged over datasets, per seed
    diffs = np.mean([np.asarray(v[best]) - np.asarray(v["mean"]) for v in per_dataset.values()], axis=0)
    gain, se = mean_and_se(diffs)
    wins = best != "mean" and se is not None and gain > se
    return {"average_auroc": average, "best": best, "gain_over_mean": gain, "gain_se": se,
            "default": best if wins else "mean"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/score-choice"))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "score-choice-cpu.json")
    args = p.parse_args(argv)
    start = time.time()
    runs: dict = {}
    for name in DATASETS:
        for seed in args.seeds:
            runs.setdefault(name, {})[seed] = one_run(name, seed, args)
            print(f"{name} seed {seed}: " + ", ".join(f"{s} {v:.3f}" for s, v in runs[name][seed].items()),
                  flush=True)
    per_dataset = {name: {s: [runs[name][seed][s] for seed in args.seeds] for s in SCORES} for name in DATASETS}
    reference = {}
    for name, info in manifest().items():
        shipped = pretrained(name)
        reference[name] = aurocs(shipped.model, shipped.config, category_of(info["category"]))
        print(f"reference {name}: " + ", ".join(f"{s} {v:.3f}" for s, v in reference[name].items()), flush=True)
    summary = {
        "what": "image AUROC under each image score (mean, max, mean of the top 1 % of pixels) of quick models "
                "trained once per dataset and seed, and of the shipped reference models",
        "command": "python benchmarks/score_choice.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "budget": {"image_size": 128, "batch_size": 16, "epochs": args.epochs, "max_steps_per_epoch": args.max_steps},
        "seeds": args.seeds, "scores": list(SCORES), "runs": {n: {str(k): v for k, v in r.items()} for n, r in runs.items()},
        "per_dataset": {n: {s: dict(zip(("mean", "se"), mean_and_se(v))) for s, v in d.items()}
                        for n, d in per_dataset.items()},
        "reference_models": reference, "choice": choose(per_dataset),
        "seconds": time.time() - start, "provenance": provenance(),
    }
    write_json(args.json, summary, overwrite=True)
    choice = summary["choice"]
    print(f"own-data default: {choice['default']} (best {choice['best']}, {100 * choice['gain_over_mean']:+.1f} "
          f"points over the mean, SE {100 * (choice['gain_se'] or 0):.1f})")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
