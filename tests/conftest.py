"""Shared fixtures: real test images that ship inside scikit-image (no downloads)."""

from typing import Callable, Dict, Tuple

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
