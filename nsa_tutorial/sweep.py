"""Many runs of ``reproduce``: the run folders, shards of the run list, a lock per run, a worker per
device, and the tables of the finished runs.

Book chapter: *Results* (reproducing the tables at scale).

A sweep trains and evaluates every (setting, category, seed) into its own run folder,
``OUTPUT/SETTING/CATEGORY/seedN`` (:func:`run_folder`, the one place that layout is written and
read), with :func:`nsa_tutorial.pipeline.train_category` and
:func:`~nsa_tutorial.pipeline.evaluate_category`; :func:`summarise` gathers the finished runs.

No scheduler of our own: ``reproduce --shard K/N`` is the K-th of N disjoint parts of the sorted
run list (every N-th run from the K-th), for a Slurm array, a Kubernetes indexed job or a shell
loop; ``reproduce --devices cuda:0,cuda:1`` runs one worker process per device on one machine
(:func:`map_on_devices`, ``concurrent.futures``).  Every run keeps its own folder under the one
shared output folder, and its ``metrics.json`` marks it finished; :func:`claim` keeps two
processes that were given the same run by mistake from running it at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N`` (argparse type of ``--shard``)."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        k, n = -1, 0
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N (K counts from 0, as "
                                         f"SLURM_ARRAY_TASK_ID does), e.g. 0/4, got {text!r}")
    return k, n


def parse_devices(text: str) -> list[str]:
    """``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``, each a device torch knows and sees."""
    import torch

    devices = [name.strip() for name in text.split(",")]
    for name in devices:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError):
            raise argparse.ArgumentTypeError(f"unknown device {name!r} in {text!r}; expected e.g. cuda:0,cuda:1")
        if device.type == "cuda" and not (torch.cuda.is_available()
                                          and (device.index or 0) < torch.cuda.device_count()):
            raise argparse.ArgumentTypeError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA GPUs")
    return devices


def shard(runs: Sequence, k: int, n: int) -> list:
    """The K-th of N disjoint parts of ``runs``: every N-th run from the K-th (round robin, so that
    the shards get similar mixes of categories).  Together the N parts are ``runs``, exactly."""
    return list(runs[k::n])


@contextmanager
def claim(folder: Path) -> Iterator[bool]:
    """``True`` for the ``with`` block if this process may run the run in ``folder``; ``False`` while
    another process holds it.  An advisory lock (``flock``) on ``folder/.lock``: the system releases
    it when its process ends, however it ends, so a killed job leaves no stale claim.  Where there is
    no ``fcntl`` (Windows), always ``True``: disjoint shards never share a run anyway."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield True
        return
    with open(folder / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_device = None  # the device of this worker process


def _start_worker(devices, n_workers: int) -> None:
    global _device
    _device = devices.get()
    if _device.startswith("cpu") and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))  # the workers share the cores


def _call(task: Callable, item):
    return task(item, _device)


def map_on_devices(task: Callable, items: Iterable, devices: Sequence[str]) -> Iterator[tuple]:
    """``(item, task(item, device))`` for every item as it finishes, run in one worker process per
    device (started with ``spawn``, as CUDA needs); each worker takes the next item when it is free.
    A worker that dies (killed, out of memory) gives ``(item, BrokenProcessPool)`` for the items left."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    with ProcessPoolExecutor(len(devices), mp_context=context, initializer=_start_worker,
                             initargs=(queue, len(devices))) as pool:
        futures = {pool.submit(_call, task, item): item for item in items}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except BrokenProcessPool as error:
                yield futures[future], error


# --------------------------------------------------------------------------- the runs of a sweep

class SweepFailed(RuntimeError):
    """Some runs of ``reproduce`` failed; each one's error is recorded in its run folder."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """What every run of a sweep shares: the data, the output folder and how to train."""

    data_root: str
    output: Path
    device: Optional[str] = None
    workers: int = 0
    restart: bool = False
    checkpoint_every: float = 60.0


def setting_name(config) -> str:
    """Run folder name of a method/label/ablation, e.g. ``nsa_logistic`` or ``nsa_logistic_B``."""
    name = f"{config.method}_{config.label}" if config.method == "nsa" else config.method
    return name if config.variant is None else f"{name}_{config.variant}"


def run_folder(output: Path, config, seed: int) -> Path:
    """``OUTPUT/SETTING/CATEGORY/seedN``: the folder of one run of a sweep."""
    return Path(output) / setting_name(config) / config.name / f"seed{seed}"


def run_folders(output: Path, marker: str) -> list:
    """``(folder, (setting, category, seed))`` of every run folder under ``output`` that holds ``marker``."""
    found = []
    for path in sorted(Path(output).glob(f"*/*/seed*/{marker}")):
        folder = path.parent
        seed = folder.name[len("seed"):]
        if seed.isdigit():
            found.append((folder, (folder.parent.parent.name, folder.parent.name, int(seed))))
    return found


def finished(metrics: Path, config, consequence: str = "redoing this run") -> bool:
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


def _run(sweep: Sweep, config, run: Path, seed: int) -> None:
    """Train and evaluate one run; its ``metrics.json`` marks it finished."""
    from .files import write_json
    from .pipeline import evaluate_category, train_category

    model = train_category(sweep.data_root, config, run, seed, sweep.device, sweep.workers, restart=sweep.restart,
                           checkpoint_every=sweep.checkpoint_every)
    result = evaluate_category(sweep.data_root, config.name, model, sweep.device)
    write_json(run / "metrics.json", result, overwrite=True, within=sweep.output)
    (run / "error.json").unlink(missing_ok=True)


def _record_failure(sweep: Sweep, run: Path, error: Exception) -> str:
    from .files import write_json
    from .pipeline import error_message, is_user_error

    message = error_message(error)
    record = {"error": message, "type": type(error).__name__,
              "traceback": None if is_user_error(error) else traceback.format_exc()}
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "error.json", record, overwrite=True, within=sweep.output)
    return message


def attempt(job: tuple, device: Optional[str]) -> tuple[str, str]:
    """Run ``job = (sweep, config, seed)`` on ``device`` unless it is finished or another process holds
    it: ``(status, message)``, status one of done, busy, ok, failed (recorded in its error.json)."""
    sweep, config, seed = job
    run = run_folder(sweep.output, config, seed)
    with claim(run) as ours:
        if not ours:
            return "busy", f"{config.name} seed {seed}: being run by another process ({run / '.lock'}); left to it"
        if finished(run / "metrics.json", config):
            return "done", f"{config.name} seed {seed}: done earlier ({run / 'metrics.json'})"
        try:
            _run(dataclasses.replace(sweep, device=device), config, run, seed)
        except Exception as error:  # recorded; the sweep goes on (KeyboardInterrupt stops it)
            message = _record_failure(sweep, run, error)
            return "failed", f"{config.name} seed {seed}: FAILED: {message} (recorded in {run / 'error.json'})"
    return "ok", f"{config.name} seed {seed}: finished ({run / 'metrics.json'})"


def reproduce(sweep: Sweep, configs: Sequence, seeds: Sequence[int], part: Optional[tuple[int, int]] = None,
              devices: Optional[Sequence[str]] = None, summarise_only: bool = False) -> None:
    """Every config with every seed (``part=(K, N)``: the K-th of N shards of that list), one worker
    process per device if ``devices``; finished runs are skipped, failed ones recorded and retried by
    the next call.  Prints the tables; raises :class:`SweepFailed` if a run failed (or, with
    ``summarise_only``, is not finished)."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds lists a seed twice: {list(seeds)}")
    if devices and sweep.device:
        raise ValueError("give either --device (one process) or --devices (one worker process per device)")
    runs = sorted(((config, seed) for config in configs for seed in seeds),
                  key=lambda run: (run[0].name, run[1]))  # the same list for every shard
    if summarise_only:
        return _report(sweep, runs, summarise(sweep.output))
    mine = shard(runs, *part) if part else runs
    if part:
        print(f"shard {part[0]}/{part[1]}: {len(mine)} of the {len(runs)} runs")
    jobs = [(sweep, config, seed) for config, seed in mine]
    results = map_on_devices(attempt, jobs, devices) if devices else ((job, attempt(job, sweep.device)) for job in jobs)
    failed = []
    for (_, config, seed), outcome in results:
        if isinstance(outcome, Exception):  # a worker process died: nothing could record it
            outcome = ("failed", f"{config.name} seed {seed}: FAILED: worker process died ({outcome})")
        status, message = outcome
        print(message, file=sys.stderr if status == "failed" else sys.stdout)
        if status == "failed":
            failed.append(f"{config.name} seed {seed}")
    print(summarise(sweep.output))
    if failed:
        raise SweepFailed(f"{len(failed)} of {len(jobs)} runs failed ({', '.join(failed)}); each error is in its "
                          "run folder's error.json and in results.json; run the same command again to "
                          "retry only the failed and missing runs")


def _report(sweep: Sweep, runs: list, tables: str) -> None:
    """``reproduce --summarise-only``: the tables of what is finished, and what is not."""
    from .files import read_result

    print(tables)
    done, failed, missing = [], [], []
    for config, seed in runs:
        run, name = run_folder(sweep.output, config, seed), f"{config.name} seed {seed}"
        if finished(run / "metrics.json", config, "not counted as finished"):
            done.append(name)
        elif (run / "error.json").exists():
            failed.append(f"{name} ({(read_result(run / 'error.json', ('error',))[0] or {}).get('error')})")
        else:
            missing.append(name)
    print(f"{len(done)} of {len(runs)} runs finished")
    for label, names in (("failed", failed), ("missing (not run yet, or running)", missing)):
        if names:
            print(f"{label}: {', '.join(names)}")
    if failed or missing:
        raise SweepFailed(f"{len(failed) + len(missing)} of {len(runs)} runs are not finished "
                          f"({len(failed)} failed, {len(missing)} missing)")


# --------------------------------------------------------------------------- the tables

def summarise(output: str | Path) -> str:
    """Collect the finished runs under ``output`` (:func:`run_folder`'s ``metrics.json``) into tables.

    Writes ``results.json`` (mean, standard error and seeds per setting, class and
    metric, and the :func:`nsa_tutorial.evaluate.provenance` of the summary) and ``tables.md`` (for MVTec AD classes laid out like the paper's
    Tables 1, 2 and 8 with the paper's numbers beside ours), and returns the Markdown.
    """
    from .config import MVTEC_CLASSES
    from .evaluate import METRICS, mean_and_se, provenance
    from .files import write_json, write_text
    from .paper_results import MVTEC, results_table

    output = Path(output)
    runs, failed = _collect_runs(output)
    summary = {
        setting: {name: {m: dict(zip(("mean", "se"), mean_and_se([r[m] for r in results])),
                                 seeds=len(results))
                         for m in METRICS if all(r.get(m) is not None for r in results)}
                  for name, results in categories.items()}
        for setting, categories in runs.items()}
    clips = _size_clips(runs)
    write_json(output / "results.json", {**summary, "failed": failed, "size_clip": clips, "provenance": provenance()},
               overwrite=True, within=output)
    parts = []
    for setting, categories in summary.items():
        method = setting  # nsa_logistic, cutpaste, fpi, ...: the paper's column of the same name
        means = {name: {m: v["mean"] for m, v in values.items()} for name, values in categories.items()}
        for metric in METRICS:
            parts.append(f"### {setting}: {metric} (size_clip: {', '.join(clips[setting])})\n")
            if all(n in MVTEC_CLASSES for n in means) and method in MVTEC[metric]:
                parts.append(results_table(means, metric, method))
            else:
                rows = [f"| {n} | {100 * v[metric]:.1f} |" for n, v in means.items() if metric in v]
                parts.append("\n".join(["| class | ours |", "|---|---:|", *rows]) if rows else "(no values)")
            parts.append("")
    if failed:
        parts += ["### failed runs\n", *(f"- {f['setting']}/{f['category']}/{f['seed']}: {f['error']}"
                                        for f in failed), ""]
    markdown = "\n".join(parts)
    write_text(output / "tables.md", markdown + "\n", overwrite=True, within=output)
    return markdown


def _size_clips(runs: dict) -> dict:
    """The eq. 9 clip (``size_clip``) each setting's runs used; a result whose config does not
    name one used ``Config``'s default, the paper's rule."""
    return {setting: sorted({(r.get("config") or {}).get("size_clip", "paper") for results in categories.values()
                             for r in results}) for setting, categories in runs.items()}


def _collect_runs(output: Path) -> tuple[dict, list]:
    """Finished runs ``{setting: {category: [metrics, ...]}}`` and failed ones (their ``error.json``).

    A ``metrics.json`` that does not parse or lacks fields is left out, with a note naming it.
    """
    from .files import read_result

    runs: dict = {}
    for folder, (setting, category, _) in run_folders(output, "metrics.json"):
        result, why = read_result(folder / "metrics.json", ("image_auroc", "pixel_auroc", "au_pro"))
        if result is None:
            print(f"note: {why}; left out of the summary")
            continue
        runs.setdefault(setting, {}).setdefault(category, []).append(result)
    failed = []
    for folder, (setting, category, seed) in run_folders(output, "error.json"):
        record, why = read_result(folder / "error.json", ("error",))
        failed.append({"setting": setting, "category": category, "seed": f"seed{seed}",
                       "error": record["error"] if record else why})
    return runs, failed
