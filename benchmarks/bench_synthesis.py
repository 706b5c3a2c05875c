"""Synthesis speed on one CPU core: NSA samples per second (prints numbers; not a timed test).

    python benchmarks/bench_synthesis.py [--samples 400] [--json benchmarks/results/synthesis-cpu.json]

Settings: the paper's ``bottle`` (object, 224x224, source gradients, background
constraints) and ``carpet`` (texture, 256x256, mixed gradients) configurations,
on real photographs that ship with scikit-image (pairs of different images, as
in training).  The reference implementation needs about 21 ms per bottle sample
at 224x224 on our machine (spec/reference-facts.md).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from nsa_tutorial.config import get_config
from nsa_tutorial.evaluate import provenance, write_json
from nsa_tutorial.synthesis import make_anomaly

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
TEXTURES = ("brick", "grass", "gravel")


def images(names, size: int) -> list:
    out = []
    for name in names:
        image = getattr(data, name)()
        image = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
        out.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    return out


def bench(config, pool, samples: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pairs = [(i, (i + 1 + int(rng.integers(len(pool) - 1))) % len(pool)) for i in range(samples)]
    pairs = [(d % len(pool), s) for d, s in pairs]
    for d, s in pairs[:20]:  # warm-up
        make_anomaly(pool[d], pool[s], config, rng)
    normal = attempted = skipped = 0
    start = time.perf_counter()
    for d, s in pairs:
        anomaly = make_anomaly(pool[d], pool[s], config, rng)
        normal += anomaly.is_normal
        attempted += anomaly.attempted
        skipped += anomaly.skipped
    seconds = time.perf_counter() - start
    return {"class": config.name, "size": config.image_size, "samples": samples,
            "ms_per_sample": 1000 * seconds / samples, "samples_per_s": samples / seconds,
            "patches_per_sample": attempted / samples, "skipped_patch_rate": skipped / max(attempted, 1),
            "normal_sample_rate": normal / samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, as a DataLoader worker has
    os.environ["OMP_NUM_THREADS"] = "1"
    runs = [bench(get_config("bottle"), images(PHOTOS, 224), args.samples),
            bench(get_config("carpet"), images(TEXTURES, 256), args.samples)]
    for r in runs:
        print(f"{r['class']:>8} {r['size']}x{r['size']}: {r['ms_per_sample']:6.2f} ms/sample "
              f"({r['samples_per_s']:6.1f} samples/s on one core), {r['patches_per_sample']:.2f} patches, "
              f"{100 * r['skipped_patch_rate']:.1f}% patches skipped, "
              f"{100 * r['normal_sample_rate']:.1f}% samples left normal")
    if args.json:
        write_json({**provenance(), "runs": runs}, args.json)  # commit, machine, GPU, date


if __name__ == "__main__":
    main()
