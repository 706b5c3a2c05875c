"""Shared fixtures: real test images that ship inside scikit-image (no downloads), and folders
for a module's shared files."""

import shutil
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

import cv2
import numpy as np
import pytest
from skimage import data

REAL_IMAGES = ("coffee", "astronaut", "chelsea", "camera", "brick", "grass", "gravel")


@pytest.fixture(scope="session")
def real_image() -> Callable[..., np.ndarray]:
    """``real_image(name, size=128)``: a scikit-image sample resized with cv2 to ``size``.

    ``size`` is an int (square) or ``(height, width)``. RGB images stay HxWx3 and
    grey ones (camera, brick, grass, gravel) stay HxW, all uint8.  A fresh copy is
    returned each time, so a test may modify it.
    """
    cache: Dict[Tuple[str, Tuple[int, int]], np.ndarray] = {}

    def load(name: str, size=128) -> np.ndarray:
        if name not in REAL_IMAGES:
            raise ValueError(f"unknown test image {name!r}; choose from {REAL_IMAGES}")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if (name, hw) not in cache:
            image = getattr(data, name)()
            cache[name, hw] = cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)
        return cache[name, hw].copy()

    return load


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory) -> Iterator[Callable[[str], Path]]:
    """``module_tmp(name)``: a new folder for files that a module's tests share, removed when
    the module's tests are done.

    Trained models and checkpoints take 50-180 MB each: kept until the end of the session,
    as ``tmp_path_factory`` keeps them, a test run held over 10 GB of disk at once.  (The
    ``tmp_path`` of a passed test is removed at once: ``tmp_path_retention_policy`` in
    ``pyproject.toml``.)
    """
    made: List[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
