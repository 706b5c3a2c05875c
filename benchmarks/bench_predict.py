"""Throughput of ``predict`` on the CPU: PyTorch next to onnxruntime (prints numbers).

    python benchmarks/bench_predict.py [--classes bottle carpet] [--batch 16] [--images 64]
                                       [--json benchmarks/results/predict-cpu.json]

At the paper's evaluation resolution (full mode: 256 x 256; objects through the centre 224
crop, textures whole), with the untrained NSA network (speed does not depend on the weights).
Times :func:`nsa_tutorial.inference.predict` on ``--images`` uint8 RGB arrays at that
resolution, in batches of ``--batch``: the scoring graph (normalisation, network, padding),
thresholds and masks; reading and writing files is left out.  Also reports the graph alone
(``Predictor.run``).  Both backends use the threads they choose by default; their counts are
recorded with the result.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nsa_tutorial.config import get_config
from nsa_tutorial.files import write_json
from nsa_tutorial.evaluate import eval_size, provenance
from nsa_tutorial.export import export_model
from nsa_tutorial.inference import load_onnx
from nsa_tutorial.inference import predict, torch_predictor
from nsa_tutorial.model import build_model


def images_at(size: int, n: int, seed: int = 0) -> list:
    """``n`` smooth random uint8 RGB images of ``size`` x ``size`` (content does not change speed)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    return [np.ascontiguousarray(np.kron(b, np.ones((8, 8, 1), np.uint8))[:size, :size]) for b in base]


def images_per_s(call, n: int, repeats: int) -> float:
    """Best of ``repeats`` timed calls (after one warm-up call) as images per second."""
    call()
    best = min(_seconds(call) for _ in range(repeats))
    return n / best


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def bench_class(name: str, batch: int, n: int, repeats: int, folder: Path) -> dict:
    config = get_config(name)
    torch.manual_seed(0)
    model = build_model(config).eval()
    size = eval_size(config)
    images = images_at(size, n)
    stack = np.stack(images[:batch])
    backends = {"torch": torch_predictor(model, config),
                "onnxruntime": load_onnx(export_model(model, config, None, folder / f"{name}.onnx"))}
    result = {"class": name, "resolution": size, "model_input": config.image_size, "batch": batch, "images": n}
    for backend, predictor in backends.items():
        result[backend] = {
            "predict_images_per_s": images_per_s(lambda: predict(predictor, images, threshold=0.5,
                                                                 batch_size=batch), n, repeats),
            "graph_images_per_s": images_per_s(lambda: predictor.run(stack), batch, repeats)}
    print(f"{name} at {size} px (model input {config.image_size}), batch {batch}: " + "; ".join(
        f"{b} {r['predict_images_per_s']:.1f} images/s (graph alone {r['graph_images_per_s']:.1f})"
        for b, r in ((b, result[b]) for b in backends)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", nargs="+", default=["bottle", "carpet"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import onnxruntime

    threads = {"torch_threads": torch.get_num_threads(), "onnxruntime": onnxruntime.__version__,
               "onnxruntime_threads": "default (one per physical core)", "load_average": os.getloadavg()}
    print(f"CPU, {os.cpu_count()} cores; torch {torch.__version__} with {threads['torch_threads']} threads, "
          f"onnxruntime {onnxruntime.__version__}; load average {threads['load_average'][0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        runs = [bench_class(name, args.batch, args.images, args.repeats, Path(folder)) for name in args.classes]
    if args.json:
        write_json(args.json, {**provenance(), **threads, "runs": runs})
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()
