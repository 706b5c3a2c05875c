"""Reference models trained at length, shipped as safetensors: ``pretrained("elpv-mono-nsa")``.

Book chapters: *Training* ("train or load"), *Evaluation*, *Ablations*, *Using a trained model*.

Each model is a ``NAME.safetensors`` file of weights (tensors only: loading it never unpickles,
so never runs code) and an entry in ``pretrained.json`` beside this module: the file's SHA-256,
the model's config and calibration, its metrics and the command and commit that trained it.
The file is found, in this order, in ``$NSA_WEIGHTS_DIR``, in the checkout's ``weights/`` folder
(offline), or in the download cache (``$NSA_DATA_DIR`` or ``~/.cache/nsa_tutorial``, folder
``weights``), where it is downloaded from the package version's release (pooch; ``$NSA_WEIGHTS_URL``
for a mirror) when missing.
Every file's checksum is verified before it is loaded; a mismatch is refused.

On the command line, ``--checkpoint pretrained:NAME`` works wherever a ``model.pt`` does
(``evaluate``, ``predict``, ``export``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch

from . import __version__
from .config import Config
from .model import NSAModel, build_model

MANIFEST = Path(__file__).with_name("pretrained.json")
#: The checkout's folder of weights (absent where the package was installed without them).
CHECKOUT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
#: Where a release keeps the files; ``{version}`` is the package version, ``{file}`` the file name.
#: ``$NSA_WEIGHTS_URL`` (the same template) points at a mirror instead.
RELEASE_URL = "https://github.com/nsa-tutorial/nsa-tutorial/releases/download/v{version}/{file}"
PREFIX = "pretrained:"


class Pretrained(NamedTuple):
    """A reference model: the network (eval mode), its config, its calibration (or ``None``) and
    its manifest entry (metrics, training record)."""

    model: NSAModel
    config: Config
    calibration: Optional[dict]
    info: dict


def manifest() -> dict:
    """Every shipped model's entry, by name."""
    return json.loads(MANIFEST.read_text())["models"]


def names() -> list:
    """The names :func:`pretrained` accepts."""
    return sorted(manifest())


def entry(name: str) -> dict:
    models = manifest()
    if name not in models:
        raise ValueError(f"no pretrained model {name!r}; expected one of {', '.join(sorted(models)) or '(none)'}")
    return models[name]


def reference_name(data_root: Union[str, Path], category: str, method: str = "nsa") -> str:
    """The shipped model of ``method`` trained on ``category`` of ``data_root`` (an embedded
    dataset's name, or a folder named like one), e.g. ``("elpv", "mono")`` -> ``"elpv-mono-nsa"``."""
    for name, info in sorted(manifest().items()):
        if (info["data_root"], info["category"], info["config"]["method"]) == (Path(data_root).name, category, method):
            return name
    shipped = ", ".join(f"{i['data_root']}/{i['category']} ({i['config']['method']})" for i in manifest().values())
    raise ValueError(f"no reference model of {Path(data_root).name}/{category} ({method}) is shipped; "
                     f"there are: {shipped}. Train one instead (MODEL = 'train').")


def pretrained_name(source: Union[str, Path, None]) -> Optional[str]:
    """``NAME`` for ``"pretrained:NAME"``, else ``None`` (a path)."""
    text = str(source) if source is not None else ""
    return text[len(PREFIX):] if text.startswith(PREFIX) else None


def sha256(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cache() -> Path:
    from .sources import default_cache_dir

    return default_cache_dir() / "weights"


def weights_file(name: str, download: bool = True) -> Path:
    """The verified local path of model ``name``'s weights, downloaded if nowhere else (see module)."""
    info = entry(name)
    file, expected = info["file"], info["sha256"]
    folders = [Path(os.environ["NSA_WEIGHTS_DIR"])] if os.environ.get("NSA_WEIGHTS_DIR") else []
    for folder in [*folders, CHECKOUT_WEIGHTS, _cache()]:
        path = folder / file
        if path.is_file():
            found = sha256(path)
            if found != expected:
                raise ValueError(f"{path} has SHA-256 {found}, the manifest expects {expected}: refusing "
                                 "to load it (a changed or damaged file); delete it or replace it with the "
                                 "release's file")
            return path
    url = (os.environ.get("NSA_WEIGHTS_URL") or RELEASE_URL).format(version=__version__, file=file)
    if not download:
        raise FileNotFoundError(f"{file} is neither in {CHECKOUT_WEIGHTS} nor in {_cache()}")
    import pooch

    print(f"Downloading pretrained model {name!r} from {url}")
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")  # pooch's own lines would go to stderr, which is kept for errors
    try:
        return Path(pooch.retrieve(url, known_hash=f"sha256:{expected}", fname=file, path=_cache(),
                                   progressbar=False))
    except Exception as error:  # no network, a missing release or a checksum mismatch
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise OSError(f"pretrained model {name!r}: {file} is not in this checkout and could not be downloaded "
                      f"from {url} ({type(error).__name__}: {reason}); on a machine with network, download "
                      f"it and put it in {_cache()} (or set NSA_WEIGHTS_DIR to its folder)") from error
    finally:
        logger.setLevel(level)


def pretrained(name: str, device: Union[str, torch.device] = "cpu") -> Pretrained:
    """Reference model ``name`` (see :func:`names`), loaded from its verified safetensors file."""
    from safetensors.torch import load_file

    info = entry(name)
    config = Config(**info["config"])
    state = load_file(str(weights_file(name)))  # tensors only: nothing is unpickled
    model = build_model(config)
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()})
    return Pretrained(model.to(device).eval(), config, info.get("calibration"), info)


def save_weights(model: torch.nn.Module, path: Union[str, Path], half: bool = True) -> str:
    """Write ``model``'s weights as safetensors (floating tensors as float16 if ``half``), atomically;
    returns the file's SHA-256.  For maintainers shipping a model (``benchmarks/ship_reference.py``)."""
    from safetensors.torch import save_file

    from .files import atomic_write

    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    atomic_write(Path(path), lambda tmp: save_file(state, str(tmp), metadata={"format": "nsa-tutorial-weights"}))
    return sha256(path)
