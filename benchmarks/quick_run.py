"""The README's quick-mode run, measured: train and evaluate the embedded solar cells from the command line.

    python benchmarks/quick_run.py [--work /tmp/quick-run] [--json benchmarks/results/quick-elpv-mono.json]

Runs the two commands a new user runs (``nsa-tutorial train`` on ``elpv``/``mono`` in quick mode,
then ``nsa-tutorial evaluate``), each in its own process, and records their wall-clock time, the
peak memory of the larger, the training speed from ``history.json`` and the metrics from
``metrics.json``, with the provenance of the code.  Nothing is typed in: every number comes
from the run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from nsa_tutorial.files import write_json
from nsa_tutorial.evaluate import provenance


def run(command: list[str]) -> float:
    """Run ``command``; its wall-clock seconds."""
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/quick-run"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out = args.work / "mono"
    cli = [sys.executable, "-m", "nsa_tutorial"]
    train = cli + ["train", "--data-root", "elpv", "--category", "mono", "--mode", "quick", "--workers", "1",
                   "--output", str(out), "--restart"]
    evaluate = cli + ["evaluate", "--data-root", "elpv", "--category", "mono", "--checkpoint",
                      str(out / "model.pt"), "--output", str(out / "metrics.json"), "--overwrite"]
    train_s, eval_s = run(train), run(evaluate)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the larger of the two, KB on Linux
    history = json.loads((out / "history.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    speeds = history["samples_per_s"][1:] or history["samples_per_s"]  # after the first (warm-up) epoch
    result = {
        "what": "quick-mode NSA (logistic) on the embedded elpv solar cells, category mono, CPU: train + evaluate",
        "command": "python benchmarks/quick_run.py (runs: " + " ".join(train[2:]) + " && " + " ".join(evaluate[2:]) + ")",
        "epochs": len(history["epoch"]),
        "wall_clock_s_train": round(train_s, 1),
        "wall_clock_s_evaluate": round(eval_s, 1),
        "samples_per_s_after_warmup": [round(min(speeds), 1), round(max(speeds), 1)],
        "peak_rss_mb": round(peak_mb),
        **{key: metrics[key] for key in ("image_auroc", "n_normal", "n_anomalous", "resolution")},
        "note": "image-level only: elpv has no pixel masks; quick-mode result, not comparable to the paper",
        "provenance": provenance(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result, overwrite=True)


if __name__ == "__main__":
    main()
