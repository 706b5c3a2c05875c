"""Writing files safely: one rule for every file the package writes.

Book chapter: *Training* (checkpoints and resume).

- :func:`atomic_write` writes into a temporary file in the target's folder, flushes it to
  disk and renames it over the target, so that a crash or a kill leaves either the old
  file or the new one, never half of one.
- :func:`check_output` refuses, before anything is computed, to overwrite an input of
  the same command, to replace an existing result without ``overwrite=True``, or to write
  outside the folder a command owns; :func:`plain_name` keeps a name from becoming a path.
- :func:`read_result` trusts a finished result (a "done" marker) only if it parses and holds
  every field it must.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

PathLike = Union[str, Path]
TEMP_SUFFIX = ".tmp"


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, rename it to ``path``.

    An interruption at any moment leaves the previous ``path`` (or none) intact; the
    temporary file, named ``.<name>.<random>.tmp``, is removed unless the process is killed
    (:func:`remove_temporaries` clears those).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.chmod(_mode_of(path))  # mkstemp's file is private (0600); the result gets an ordinary file's mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def _mode_of(path: Path) -> int:
    """The mode ``path`` keeps (it exists) or an ordinary new file gets (0666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(folder: PathLike, names: Iterable[str]) -> list:
    """Delete the temporary files that :func:`atomic_write` left behind in ``folder`` for the
    files ``names`` when its process was killed; returns their paths."""
    stale = [p for name in names for p in sorted(Path(folder).glob(f".{name}.*{TEMP_SUFFIX}")) if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def plain_name(name: str, what: str = "name") -> str:
    """``name`` if it is one plain folder or file name (no separator, not ``.``/``..``), else an error."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name \
            or Path(name).is_absolute() or Path(name).name != name:
        raise ValueError(f"{what} must be a plain name without path separators, got {name!r}")
    return name


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: PathLike, *, overwrite: bool = False, inputs: Iterable[PathLike] = (),
                 within: Optional[PathLike] = None, flag: str = "--overwrite") -> Path:
    """``path`` if a command may write its result there; else a one-line error saying why.

    Refused: a folder; one of the command's ``inputs`` (never, even with ``overwrite``);
    a path outside ``within``; an existing file unless ``overwrite`` (``flag`` names the
    option that allows it).  Creates the parent folder.
    """
    path = Path(path).expanduser()
    if within is not None and not path.resolve().is_relative_to(Path(within).expanduser().resolve()):
        raise ValueError(f"{path} lies outside the output folder {within}; refusing to write there")
    for source in inputs:
        if _same(path, Path(source)) or path.resolve() == Path(source).resolve():
            raise ValueError(f"{path} is an input of this command ({source}); "
                             "choose another output file, an input is never overwritten")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected the name of a file to write")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass {flag} to replace it, or choose another output")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: PathLike, data, *, overwrite: bool = False, inputs: Sequence[PathLike] = (),
               within: Optional[PathLike] = None) -> Path:
    """Write ``data`` as pretty JSON, atomically, after :func:`check_output`."""
    text = json.dumps(data, indent=2) + "\n"
    return write_text(path, text, overwrite=overwrite, inputs=inputs, within=within)


def write_text(path: PathLike, text: str, *, overwrite: bool = False, inputs: Sequence[PathLike] = (),
               within: Optional[PathLike] = None) -> Path:
    """Write ``text`` (UTF-8), atomically, after :func:`check_output`."""
    path = check_output(path, overwrite=overwrite, inputs=inputs, within=within)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_result(path: PathLike, required: Iterable[str] = ()) -> tuple[Optional[dict], str]:
    """``(result, "")`` for a JSON object holding every ``required`` key, else ``(None, why)``.

    ``why`` is empty when the file does not exist, and names the file and the defect otherwise
    (unreadable, half written, not an object, fields missing).
    """
    path = Path(path)
    if not path.exists():
        return None, ""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path} is unreadable or half written ({type(err).__name__}: {err})"
    if not isinstance(result, dict):
        return None, f"{path} holds a JSON {type(result).__name__}, expected an object"
    missing = [key for key in required if key not in result]
    if missing:
        return None, f"{path} is incomplete: fields {missing} are missing"
    return result, ""
