"""Execute the committed notebooks the way Colab does (`make colab-check`).

    python tools/colab_check.py --python _build/colab-venv/bin/python [--only 06_training 07_evaluation]

The kernel runs in a separate virtual environment with only a Colab-like stack (torch,
torchvision, numpy, OpenCV, matplotlib, scikit-learn, scikit-image, ipywidgets 7,
ipykernel): no jupyter-book, no myst-nb and no nsa_tutorial, which each notebook's own
install cell installs. ``google.colab`` is a stub (tools/colab_stub) that the kernel imports
at start-up, as Colab's runtime does; its ``drive.mount`` makes a local folder look like
Google Drive, so chapters 6 and 7 share their run folder there. The install cell's
``git+https://github.com/...@vX.Y.Z`` URL is the one thing rewritten: to a copy of this
checkout, because CI has no GitHub. Quick mode (NSA_MODE=quick). Exit 1 naming every
notebook that failed; torch must come out of the install cells untouched. The chapters train
(NSA_MODEL=train, as on a GPU runtime). Chapter 6 then runs a second time in a new kernel with
the same Drive, as after a disconnected runtime: its checkpoints must be resumed, never deleted
or trained again. Last, chapters 6 and 7 run with ``MODEL`` left at "auto", as on a Colab CPU
runtime: they load the shipped reference model (downloaded and verified) and train nothing new.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "_build" / "colab-check"
INSTALL = re.compile(r"git\+https://github\.com/nsa-tutorial/nsa-tutorial@(v[\w.]+)")
FORBIDDEN = ("nsa_tutorial", "myst_nb", "jupyter_book", "jupytext")  # absent before the install cell


def toc_notebooks() -> List[Path]:
    """The committed .ipynb files, in the book's order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").is_file()]


def version() -> str:
    return re.search(r'__version__ = "([^"]+)"', (ROOT / "nsa_tutorial" / "__init__.py").read_text()).group(1)


def stage_package(dest: Path) -> Path:
    """A clean copy of the package's sources (what the git URL would deliver) to install from."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "nsa_tutorial", dest / "nsa_tutorial",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    return dest


def probe(python: str, env: dict) -> dict:
    """What the kernel's environment has: forbidden modules present, torch version and file time."""
    code = ("import importlib.util, json, os, torch; "
            f"print(json.dumps({{'present': [m for m in {FORBIDDEN!r} if importlib.util.find_spec(m)], "
            "'torch': torch.__version__, 'torch_mtime': os.path.getmtime(torch.__file__)}))")
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=WORK).stdout
    return json.loads(out.strip().splitlines()[-1])


def kernel_env(python: str, model: Optional[str] = "train") -> dict:
    """The kernel's environment: nothing of the calling venv (no PYTHONPATH to this checkout);
    ``model`` is the chapters' MODEL switch (None: their default, "auto")."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin", NSA_MODE="quick", NSA_NO_WIDGETS="1",
               PYTHONPATH=str(ROOT / "tools" / "colab_stub"), NSA_DRIVE_MOUNT=str(WORK / "drive"),
               NSA_DATA_DIR=str(WORK / "data"), MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.pop("NSA_RUN_DIR", None)
    env.pop("NSA_MODEL", None)
    if model is not None:
        env["NSA_MODEL"] = model
    return env


KERNEL, AUTO_KERNEL = "nsa-colab", "nsa-colab-auto"  # the second leaves MODEL at "auto"


def write_kernelspec(python: str, env: dict, folder: Path, name: str = KERNEL) -> None:
    spec = folder / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--HistoryManager.hist_file=:memory:",
                 "--IPKernelApp.exec_lines=import google.colab"],
        "display_name": "Colab-like", "language": "python", "env": env}))


def point_install_at(nb: nbformat.NotebookNode, package: Path, tag: str) -> None:
    """Rewrite the one install cell's git URL to the staged package; fail if it is not there."""
    hits = [c for c in nb.cells if c.cell_type == "code" and INSTALL.search(c.source)]
    if len(hits) != 1:
        raise ValueError(f"expected one install cell with {INSTALL.pattern}, found {len(hits)}")
    found = INSTALL.search(hits[0].source).group(1)
    if found != tag:
        raise ValueError(f"the install cell pins {found}, the package is {tag}")
    hits[0].source = INSTALL.sub(package.as_uri(), hits[0].source)


def run_one(path: Path, package: Path, tag: str, timeout: int, kernel: str = KERNEL) -> Optional[str]:
    """Execute one notebook in a fresh 'Colab' working folder; the error text, or None."""
    nb = nbformat.read(path, as_version=4)
    try:
        point_install_at(nb, package, tag)
    except ValueError as error:
        return str(error)
    content = WORK / "content" / path.stem
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir(parents=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel,
                            resources={"metadata": {"path": str(content)}})
    signal.signal(signal.SIGTERM, lambda *_: _kill_kernel_and_exit(client))
    try:
        client.execute()
    except CellTimeoutError:
        return f"{HUNG} within {timeout} s (a cell hung or ran too long)"
    except DeadKernelError:
        return "the kernel died (out of memory, or killed)"
    except CellExecutionError as error:
        return re.sub(r"\x1b\[[0-9;]*m", "", str(error))[-3000:]  # without the traceback's colours
    finally:
        nbformat.write(nb, WORK / "executed" / (path.name if kernel == KERNEL else f"{path.stem}-{kernel}.ipynb"))
    return None


HUNG = "no reply from the kernel"


def run_isolated(path: Path, package: Path, tag: str, timeout: int, kernel: str = KERNEL) -> Optional[str]:
    """:func:`run_one` in a process of its own (a fresh ZeroMQ context per notebook), so that one
    notebook's kernel cannot leave the next one's client waiting; the error text, or None."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import colab_check as c; "
            "e = c.run_one(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[7]); "
            "print(e or '', end='', file=open(sys.argv[6], 'w')); sys.exit(1 if e else 0)")
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(path), str(package),
                               tag, str(timeout), report.name, kernel], env=os.environ.copy())
        text = Path(report.name).read_text()
    if done.returncode and not text:
        return f"the notebook's runner exited with code {done.returncode}"
    return text or None


def serve_release_files(folder: Path):
    """A loopback HTTP server of ``folder`` (the release's weight files), in a daemon thread."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # no line per request in the check's output
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _checkpoints() -> dict:
    """Every checkpoint on the stub Drive, with what tells a rewritten file from the same one."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (WORK / "drive").rglob("checkpoint.pt")}


def returning_user(path: Path, package: Path, tag: str, timeout: int, kernel: str = KERNEL) -> Optional[str]:
    """Run ``path`` again in a new kernel with the Drive of the first run, as a user does after a
    disconnected runtime (or who opens it on a CPU runtime, ``kernel=AUTO_KERNEL``): every
    checkpoint on Drive must still be there, the same file, and none is added (the run is
    resumed or the reference model loaded, nothing deleted or trained again)."""
    before = _checkpoints()
    if not before:
        return f"the first run of {path.name} left no checkpoint on the stub Drive ({WORK / 'drive'})"
    error = run_isolated(path, package, tag, timeout, kernel)
    if error:
        return error
    after = _checkpoints()
    changed = [str(p) for p in before if after.get(p) != before[p]] + [str(p) for p in after if p not in before]
    return f"checkpoints deleted, rewritten or added by the second run: {changed}" if changed else None


def _kill_kernel_and_exit(client: NotebookClient) -> None:
    """On SIGTERM (e.g. from ``timeout``): the kernel runs in its own session, so end it too."""
    pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
    if pid:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(143)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="python of the Colab-like virtual environment")
    parser.add_argument("--only", nargs="*", default=None, help="notebook names (e.g. 06_training)")
    parser.add_argument("--notebooks", nargs="*", type=Path, default=None, help="explicit .ipynb files")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (a hung cell is retried once)")
    parser.add_argument("--keep-drive", action="store_true",
                        help="keep the stub Drive of the last run, as a returning Colab user has it")
    args = parser.parse_args(argv)
    python = str(Path(args.python).absolute())
    notebooks = args.notebooks or [p for p in toc_notebooks() if args.only is None or p.stem in args.only]
    if not notebooks:
        print(f"no notebooks match {args.only}", file=sys.stderr)
        return 2
    for sub in ("executed",) if args.keep_drive else ("drive", "executed"):
        shutil.rmtree(WORK / sub, ignore_errors=True)
        (WORK / sub).mkdir(parents=True)
    env = kernel_env(python)
    # what an earlier check's install cells added: the package, and from its course extra what Colab lacks
    subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "nsa-tutorial", "otter-grader", "jupytext"], env=env,
                   capture_output=True, cwd=WORK)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          env=env, capture_output=True, text=True, cwd=WORK).stdout.strip()
    shutil.rmtree(Path(site) / "nsa_tutorial", ignore_errors=True)  # numba's cache files outlive pip uninstall
    before = probe(python, env)
    if before["present"]:
        print(f"the Colab-like environment must not have {before['present']} before the install cell",
              file=sys.stderr)
        return 1
    package, tag = stage_package(WORK / "package"), f"v{version()}"
    # The staged package has no weights/ (as a git install on Colab): the chapters download the
    # reference models, here from a loopback mirror of the release files, checksum verified.
    shutil.rmtree(WORK / "data" / "weights", ignore_errors=True)
    release = serve_release_files(ROOT / "weights")
    env["NSA_WEIGHTS_URL"] = f"http://127.0.0.1:{release.server_address[1]}/{{file}}"
    failures, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as jupyter_path:
        write_kernelspec(python, env, Path(jupyter_path))
        write_kernelspec(python, {**kernel_env(python, None), "NSA_WEIGHTS_URL": env["NSA_WEIGHTS_URL"]},
                         Path(jupyter_path), AUTO_KERNEL)
        os.environ["JUPYTER_PATH"] = jupyter_path
        for path in notebooks:
            t0 = time.perf_counter()
            error = run_isolated(path, package, tag, args.timeout)
            if error and error.startswith(HUNG):  # once: a lost kernel message, seen on loaded machines
                print(f"     {path.name}: {error}; trying once more", flush=True)
                error = run_isolated(path, package, tag, args.timeout)
            print(f"{'FAIL' if error else 'ok  '} {path.name:28s} {time.perf_counter() - t0:6.0f} s", flush=True)
            if error:
                failures.append(path.name)
                print("    " + error.replace("\n", "\n    "), flush=True)
        returning = [p for p in notebooks if p.stem == "06_training"]
        if returning and "06_training.ipynb" not in failures:
            error = returning_user(returning[0], package, tag, args.timeout)
            print(f"{'FAIL' if error else 'ok  '} {'06_training.ipynb again':28s} (a new kernel, as after a "
                  "disconnect: the run on Drive is resumed, not deleted)", flush=True)
            if error:
                failures.append("06_training.ipynb run again")
                print("    " + error.replace("\n", "\n    "), flush=True)
        for path in [p for p in notebooks if p.stem in ("06_training", "07_evaluation") and p.name not in failures]:
            error = returning_user(path, package, tag, args.timeout, AUTO_KERNEL)
            print(f"{'FAIL' if error else 'ok  '} {path.name + ', MODEL auto':28s} (a CPU runtime: the reference "
                  "model is loaded, nothing is trained)", flush=True)
            if error:
                failures.append(f"{path.name} with MODEL auto")
                print("    " + error.replace("\n", "\n    "), flush=True)
    after = probe(python, env)
    if (after["torch"], after["torch_mtime"]) != (before["torch"], before["torch_mtime"]):
        failures.append(f"torch was reinstalled ({before['torch']} -> {after['torch']})")
    print(f"Colab check: {len(notebooks) - len(failures)} of {len(notebooks)} passed in "
          f"{time.perf_counter() - start:.0f} s (executed notebooks in {WORK / 'executed'})")
    if failures:
        print("failed: " + ", ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
