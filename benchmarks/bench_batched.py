"""Batched synthesis speed (:mod:`nsa_tutorial.batched`) next to the per-core CPU path (prints numbers).

    python benchmarks/bench_batched.py [--batch 64] [--repeats 3] [--cpu-samples 100]
                                       [--overwrite] [--json benchmarks/results/batched.json]

Settings as ``bench_synthesis.py``: ``bottle`` at 224x224 (photographs, background
constraints, source gradients) and ``carpet`` at 256x256 (textures, mixed gradients).
Reports samples/s of ``make_anomaly_batch`` for batches of ``--batch`` on the CPU with
one thread and with all threads, and on CUDA when available; of ``make_anomaly`` on one
core; and, on CUDA, the time of one training step (forward, backward, Adam; channels
last, bfloat16 autocast) at the same batch size, so that the share of a step spent on
synthesis can be read off.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from bench_synthesis import PHOTOS, SKIMAGE_TEXTURES, bench, images, pairs_of
from nsa_tutorial.batched import make_anomaly_batch
from nsa_tutorial.config import get_config
from nsa_tutorial.files import write_json
from nsa_tutorial.evaluate import provenance
from nsa_tutorial.files import check_output
from nsa_tutorial.model import build_model

SETTINGS = (("bottle", PHOTOS, 224), ("carpet", SKIMAGE_TEXTURES, 256))


def batch_of_pairs(pool: list, batch: int, seed: int = 0) -> tuple:
    """uint8 B x H x W x 3 destinations and sources, each pair two different images."""
    dest, src = zip(*pairs_of(pool, batch, seed))
    return (torch.from_numpy(np.stack([pool[i] for i in dest])),
            torch.from_numpy(np.stack([pool[i] for i in src])))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batched(config, pool: list, batch: int, device: torch.device, repeats: int) -> dict:
    """Seconds per batch of ``make_anomaly_batch`` (after one warm-up batch) and its statistics."""
    dest, src = (t.to(device) for t in batch_of_pairs(pool, batch))
    generator = torch.Generator().manual_seed(0)
    make_anomaly_batch(dest, src, config, generator)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        anomaly = make_anomaly_batch(dest, src, config, generator)
    _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    return {"s_per_batch": seconds, "samples_per_s": batch / seconds,
            "patches_per_sample": anomaly.placed.sum().item() / batch,
            "normal_sample_rate": anomaly.is_normal.float().mean().item()}


def time_train_step(config, batch: int, device: torch.device, repeats: int = 10) -> float:
    """Seconds per training step of the NSA model on random data (after warm-up)."""
    model = build_model(config).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    size = config.image_size
    image = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    label = torch.rand(batch, 1, size, size, device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            prediction = model(image)
        loss = F.binary_cross_entropy(prediction.float(), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def run(name: str, photos: tuple, size: int, args: argparse.Namespace) -> dict:
    config, pool = get_config(name), images(photos, size)
    cv2.setNumThreads(1)
    result = {"class": name, "size": size, "batch": args.batch,
              "cpu_path_one_core": bench(config, pool, args.cpu_samples)}
    for label, threads in (("batched_cpu_1_thread", 1), ("batched_cpu_all_threads", os.cpu_count())):
        torch.set_num_threads(threads)
        result[label] = time_batched(config, pool, args.batch, torch.device("cpu"), args.repeats)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        result["batched_cuda"] = time_batched(config, pool, args.batch, cuda, 3 * args.repeats)
        result["train_step_cuda_s"] = time_train_step(config, args.batch, cuda)
    return result


def report(r: dict) -> None:
    print(f"{r['class']} {r['size']}x{r['size']}, batch {r['batch']}:")
    print(f"  CPU path, one core          {r['cpu_path_one_core']['samples_per_s']:8.1f} samples/s")
    for key in ("batched_cpu_1_thread", "batched_cpu_all_threads", "batched_cuda"):
        if key in r:
            print(f"  {key.replace('_', ' '):<28}{r[key]['samples_per_s']:8.1f} samples/s "
                  f"({1000 * r[key]['s_per_batch']:.1f} ms per batch, "
                  f"{r[key]['patches_per_sample']:.2f} placed patches/sample, "
                  f"{100 * r[key]['normal_sample_rate']:.1f}% normal)")
    if "train_step_cuda_s" in r:
        step, synthesis = r["train_step_cuda_s"], r["batched_cuda"]["s_per_batch"]
        print(f"  CUDA training step           {1000 * step:8.1f} ms; synthesis is "
              f"{100 * synthesis / (synthesis + step):.0f}% of step + synthesis")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per CPU setting (x3 on CUDA)")
    parser.add_argument("--cpu-samples", type=int, default=100, help="samples for the per-core CPU path")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args()
    if args.json:  # refused now, not after the measurements
        check_output(args.json, overwrite=args.overwrite)
    runs = []
    for name, photos, size in SETTINGS:
        runs.append(run(name, photos, size, args))
        report(runs[-1])
    if args.json:
        write_json(args.json, {**provenance(), "runs": runs}, overwrite=args.overwrite)  # commit, machine, GPU, date


if __name__ == "__main__":
    main()
