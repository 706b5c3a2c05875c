"""Datasets in MVTec AD layout, downloads, embedded data and the self-supervised training set.

Book chapters: *Training* (the training set), *Evaluation* (test items and masks) and
*Beyond MVTec AD* (your own folders, the embedded solar cells and textures, chest X-rays).

Every dataset is a folder in MVTec AD layout, read by one loader::

    root/<category>/train/good/*.png          normal training images
    root/<category>/test/good/*.png           normal test images
    root/<category>/test/<defect>/*.png       anomalous test images (any folder but ``good``)
    root/<category>/ground_truth/<defect>/<stem>_mask.png   optional 0/255 masks

The embedded datasets (``"elpv"`` solar cells, ``"textures"``) are written into this
layout in a cache folder on first use (:func:`resolve_data_root`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .files import atomic_write

PathLike = Union[str, Path]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The MVTec AD archive; its host has moved it several times, so the address lives here only.
MVTEC_URL = ("https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/"
             "420938113-1629960298/mvtec_anomaly_detection.tar.xz")
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_ARCHIVE = "mvtec_anomaly_detection.tar.xz"
MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"

EMBEDDED = ("elpv", "textures")
ELPV_CATEGORIES = ("mono", "poly")
ELPV_TEST_FRACTION = 0.2  # of the normal cells; all fully defective cells go to the test set
TEXTURES = ("brick", "grass", "gravel")
TEXTURE_CATEGORIES = tuple(f"texture_{name}" for name in TEXTURES)
TEXTURE_DEFECTS = ("scratch", "crack", "hole", "stain", "missing_chunk", "border_chunk")
TEXTURE_COUNTS = {"train": 60, "good": 20, "defect": 8}  # images per category (defect: per type)
TEXTURE_SIZE = 256
# (train normal, test normal, test abnormal) in the paper's rCXR (Sec. 4.3).
RCXR_PAPER_COUNTS = {"male": (1973, 299, 139), "female": (1641, 244, 123)}

_MARKER = ".nsa_tutorial_complete"
_CACHE_VERSION = "2"  # bump when a materialised dataset's content changes
_SEED = 20220723  # fixed seed of the embedded datasets' splits and defects


@dataclass
class TestItem:
    """One test image: ``label`` 0 (good) or 1 (anomalous), its defect folder and mask."""

    __test__ = False  # not a pytest test class

    path: Path
    label: int
    defect: str
    mask_path: Optional[Path]


@dataclass
class Category:
    """One category (class) of a dataset in MVTec AD layout; see :func:`load_category`."""

    root: Path
    name: str
    train: List[Path]
    test: List[TestItem]
    has_masks: bool

    def train_files(self) -> List[Tuple[str, int]]:
        """(name relative to the category folder, size in bytes) of each training image: the data's
        fingerprint in a checkpoint (no modification times: copying the data changes them)."""
        folder = self.root / self.name
        return [(_relative(p, folder), p.stat().st_size) for p in self.train]


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:  # a hand-made Category with files elsewhere
        return path.as_posix()


def check_category(category: Category, size: int = 32) -> int:
    """Read every test image and mask of ``category`` once, so that a corrupt image or a mask of the
    wrong size is reported before training, not after it; returns the number of test items.

    ``size``: the resolution the items are resized to (small: only reading matters here).
    Book chapter: *Evaluation*.
    """
    if not category.test:
        raise ValueError(f"{category.root / category.name}: the test split is empty")
    for item in category.test:
        load_test_item(item, size)
    return len(category.test)


# --------------------------------------------------------------------------- reading images

def read_image(path: PathLike) -> np.ndarray:
    """Read an image as uint8 RGB, HxWx3, whatever its channels and bit depth.

    Grayscale is repeated to three channels (so one model shape serves all classes),
    an alpha channel is dropped and 16-bit images are scaled to 8 bits.
    Book chapter: *Beyond MVTec AD*.
    """
    path = Path(path)
    image = _decode(path, cv2.IMREAD_UNCHANGED)
    if image.dtype == np.uint16:
        image = np.round(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported pixel type {image.dtype}; expected 8- or 16-bit images")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(image.shape[2])
    if code is None:
        raise ValueError(f"{path}: {image.shape[2]} channels; expected 1, 3 or 4")
    return cv2.cvtColor(image, code)


def _decode(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    # imdecode on the file's bytes instead of imread: imread fails on non-ASCII paths on Windows.
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ValueError(f"{path} could not be read as an image (corrupt, truncated or not an image file)")
    return image


def read_mask(path: PathLike, shape: Tuple[int, int], image_path: Optional[PathLike] = None) -> np.ndarray:
    """Read a ground-truth mask (0 = normal, anything else = anomalous) as bool HxW.

    ``shape`` is the (height, width) of its image; a mask of another size is an error
    that names both files.  Book chapter: *Evaluation*.
    """
    path = Path(path)
    mask = _decode(path, cv2.IMREAD_UNCHANGED)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != tuple(shape[:2]):
        raise ValueError(f"mask {path} is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
                         f"{image_path or '(not given)'} is {shape[0]}x{shape[1]}; "
                         "a mask must have its image's size")
    return mask > 0


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size``: area averaging when shrinking (no aliasing), else bilinear."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def load_test_item(item: TestItem, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """A test image resized to ``size`` x ``size`` (uint8 x3) and its mask (bool, nearest).

    The mask is all False for good images and when the category has no masks.
    As in the reference, non-square images are squeezed to a square.  Book chapter: *Evaluation*.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    image = read_image(item.path)
    if item.label == 0 or item.mask_path is None:
        return resize_image(image, size), np.zeros((size, size), dtype=bool)
    mask = read_mask(item.mask_path, image.shape[:2], image_path=item.path)
    mask = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return resize_image(image, size), mask.astype(bool)


def to_tensor(image: np.ndarray, normalize: str = "imagenet") -> torch.Tensor:
    """uint8 HxWx3 -> float32 3xHxW in [0, 1], then ImageNet-normalised if ``normalize="imagenet"``.

    MVTec AD uses ImageNet mean/std, chest X-rays plain [0, 1] (``"none"``).  Book chapter: *Training*.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 HxWx3 array, got "
                         f"{getattr(image, 'dtype', type(image))} {getattr(image, 'shape', '')}")
    if normalize not in ("imagenet", "none"):
        raise ValueError(f"normalize must be 'imagenet' or 'none', got {normalize!r}")
    return normalize_batch(torch.from_numpy(np.ascontiguousarray(image))[None], normalize)[0].contiguous()


def normalize_batch(images: torch.Tensor, normalize: str = "imagenet") -> torch.Tensor:
    """uint8 B x H x W x 3 (on any device) -> float32 B x 3 x H x W, exactly as :func:`to_tensor`
    does per image (used when synthesis runs on the training device)."""
    tensor = images.permute(0, 3, 1, 2).float().div_(255.0)
    if normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        tensor = (tensor - mean) / std
    return tensor


# --------------------------------------------------------------------------- MVTec AD layout

def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _subfolders(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_categories(root: PathLike) -> List[str]:
    """Names of the sub-folders of ``root`` that have a ``train`` folder (MVTec AD classes)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist or is not a folder")
    return [p.name for p in _subfolders(root) if (p / "train").is_dir()]


def load_category(root: PathLike, category: str) -> Category:
    """Scan ``root/category`` in MVTec AD layout (see the module docstring); no pixels are read.

    Without a ``ground_truth`` folder only image-level metrics are possible: a warning says so
    and ``has_masks`` is False.  Book chapters: *Evaluation*, *Beyond MVTec AD*.
    """
    folder = _category_folder(Path(root).expanduser(), category)
    train = _images_in(folder / "train" / "good")
    if not train:
        raise ValueError(f"no training images in {folder / 'train' / 'good'}; expected normal images "
                         f"with suffix {', '.join(IMAGE_SUFFIXES)} (any case)")
    has_masks = (folder / "ground_truth").is_dir()
    if not has_masks:
        warnings.warn(f"{folder} has no ground_truth folder: only image-level metrics (image AUROC) "
                      "can be computed for it, no pixel-level ones", stacklevel=2)
    test = _test_items(folder, has_masks)
    return Category(root=folder.parent, name=category, train=train, test=test, has_masks=has_masks)


def _category_folder(root: Path, category: str) -> Path:
    if not isinstance(category, str) or not category:
        raise ValueError(f"category must be a non-empty string, got {category!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist or is not a folder")
    folder = root / category
    hint = (f" {root} looks like a category folder itself: pass its parent as root and "
            f"{root.name!r} as category." if (root / "train" / "good").is_dir() else "")
    if not folder.is_dir():
        found = list_categories(root)
        raise FileNotFoundError(f"category {category!r} not found in {root}; categories found there: "
                                f"{found or 'none (no sub-folder has a train folder)'}.{hint}")
    missing = [sub for sub in ("train/good", "test") if not (folder / sub).is_dir()]
    if missing:
        raise ValueError(f"{folder} is not in MVTec AD layout: missing {', '.join(missing)}; expected "
                         "train/good/ (normal images), test/good/ and test/<defect>/ (test images) and "
                         f"optionally ground_truth/<defect>/<name>_mask.png.{hint}")
    return folder


def _test_items(folder: Path, has_masks: bool) -> List[TestItem]:
    items = []
    for defect_dir in _subfolders(folder / "test"):
        defect = defect_dir.name
        for path in _images_in(defect_dir):
            if defect == "good":
                items.append(TestItem(path, 0, defect, None))
                continue
            mask = folder / "ground_truth" / defect / f"{path.stem}_mask.png"
            if has_masks and not mask.is_file():
                raise FileNotFoundError(f"anomalous test image {path} has no mask: expected {mask} "
                                        "(ground_truth exists, so every anomalous image needs one)")
            items.append(TestItem(path, 1, defect, mask if has_masks else None))
    if not items:
        raise ValueError(f"no test images in {folder / 'test'}; expected test/good/ and test/<defect>/ "
                         f"with suffix {', '.join(IMAGE_SUFFIXES)}")
    return items


# --------------------------------------------------------------------------- cache and embedded data

def default_cache_dir() -> Path:
    """``$NSA_DATA_DIR`` if set, else ``~/.cache/nsa_tutorial``."""
    return Path(os.environ.get("NSA_DATA_DIR") or Path.home() / ".cache" / "nsa_tutorial").expanduser()


def resolve_data_root(name_or_path: PathLike, cache_dir: Optional[PathLike] = None) -> Path:
    """A data root in MVTec AD layout: an existing folder as is, or an embedded dataset.

    Embedded datasets are written into ``cache_dir`` on first use; later calls reuse them
    (a marker file says the folder is complete; an interrupted build is redone):

    - ``"elpv"``: real solar cells, categories ``mono`` and ``poly``; normal = defect
      probability 0, ``test/defective`` = probability 1, the uncertain 1/3 and 2/3 left out;
      image-level labels only (no masks).
    - ``"textures"``: categories ``texture_brick``, ``texture_grass``, ``texture_gravel``:
      made-up defects drawn on real textures, with exact masks.  Numbers on them measure how
      well these mechanisms are localised, not MVTec AD performance.

    Book chapter: *Beyond MVTec AD*.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    builders = {"elpv": _build_elpv, "textures": _build_textures}
    if str(name_or_path) not in builders:
        raise FileNotFoundError(f"{name_or_path!r} is neither an existing folder (a data root in MVTec AD "
                                f"layout was expected) nor an embedded dataset name {EMBEDDED}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return _materialise(cache / str(name_or_path), f"{name_or_path} v{_CACHE_VERSION}",
                        builders[str(name_or_path)])


def _materialise(root: Path, tag: str, build: Callable[[Path], None]) -> Path:
    """Build ``root`` once: into a side folder that is renamed when complete, so a crash leaves
    no half-written ``root``; a marker holding ``tag`` tells later calls it is done."""
    marker = root / _MARKER
    if marker.is_file() and marker.read_text() == tag:
        return root
    if root.exists():
        if not marker.is_file():
            raise FileExistsError(f"{root} exists but was not made by nsa_tutorial (no {_MARKER} "
                                  "file); move it away or choose another folder")
        shutil.rmtree(root)  # ours, from another version or other settings
    partial = root.with_name(f".{root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    build(partial)
    atomic_write(partial / _MARKER, lambda tmp: tmp.write_text(tag))
    partial.rename(root)
    return root


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def _build_elpv(root: Path) -> None:
    """Solar cells of ``elpv-dataset`` (Buerhop-Lutz et al., Deitsch et al.) in MVTec AD layout.

    Normal = defect probability 0, anomalous (``test/defective``) = probability 1; the uncertain
    cells (1/3, 2/3) are left out.  Per cell type (``mono``, ``poly``) a fixed-seed
    :data:`ELPV_TEST_FRACTION` of the normal cells goes to ``test/good``, the rest to
    ``train/good``.  Labels are per image, so there is no ``ground_truth``.  Files are named
    ``cell<index>.png`` by the cell's index in ``load_dataset()``.
    """
    from elpv_dataset.utils import load_dataset

    images, probs, types = load_dataset()
    for k, kind in enumerate(ELPV_CATEGORIES):
        normal = np.flatnonzero((types == kind) & (probs == 0))
        defective = np.flatnonzero((types == kind) & (probs == 1))
        normal = np.random.default_rng([_SEED, k]).permutation(normal)
        n_test = round(ELPV_TEST_FRACTION * len(normal))
        split = {"test/good": normal[:n_test], "train/good": normal[n_test:], "test/defective": defective}
        for folder, indices in split.items():
            for i in indices:
                _write_png(root / kind / folder / f"cell{i:04d}.png", images[i])


def _build_textures(root: Path) -> None:
    """Made-up defects on real textures (scikit-image's brick, grass and gravel, 512x512 grey).

    Train images are 256x256 crops of the top half, test images crops of the bottom half, each
    flipped/rotated by one of the 8 symmetries of the square: train and test share no pixel of
    the source.  Test defects are drawn by mechanisms unlike NSA's patch blending (see
    :data:`TEXTURE_DEFECTS`), each with its exact binary mask.  Results on them measure how well
    these mechanisms are localised, not performance on MVTec AD.
    """
    import skimage.data

    for k, name in enumerate(TEXTURES):
        texture = getattr(skimage.data, name)()
        rng = np.random.default_rng([_SEED, k])
        folder = root / f"texture_{name}"
        for j, crop in enumerate(_texture_crops(texture[:TEXTURE_SIZE], TEXTURE_COUNTS["train"], rng)):
            _write_png(folder / "train" / "good" / f"{j:03d}.png", crop)
        bottom = texture[-TEXTURE_SIZE:]
        for j, crop in enumerate(_texture_crops(bottom, TEXTURE_COUNTS["good"], rng)):
            _write_png(folder / "test" / "good" / f"{j:03d}.png", crop)
        for defect in TEXTURE_DEFECTS:
            for j, crop in enumerate(_texture_crops(bottom, TEXTURE_COUNTS["defect"], rng)):
                image, mask = add_texture_defect(crop, defect, rng)
                _write_png(folder / "test" / defect / f"{j:03d}.png", image)
                _write_png(folder / "ground_truth" / defect / f"{j:03d}_mask.png",
                           mask.astype(np.uint8) * 255)


def _texture_crops(band: np.ndarray, n: int, rng: np.random.Generator) -> List[np.ndarray]:
    """``n`` random square crops of a band as tall as the crop, each with a random symmetry."""
    size = band.shape[0]
    crops = []
    for _ in range(n):
        x = int(rng.integers(0, band.shape[1] - size + 1))
        crop = np.rot90(band[:, x:x + size], k=int(rng.integers(4)))
        crops.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return crops


# --------------------------------------------------------------------------- procedural defects

def add_texture_defect(image: np.ndarray, defect: str,
                       rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one made-up defect on a uint8 grey image: ``(image, mask)``.

    Each mechanism paints an opacity map ``alpha`` in [0, 1] with a colour:
    ``out = (1 - alpha) * image + alpha * colour``.  The mask is ``alpha >= 1/2``: the pixels
    the defect dominates.  Book chapter: *Beyond MVTec AD*.
    """
    painters = {"scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain,
                "missing_chunk": _missing_chunk, "border_chunk": _border_chunk}
    if defect not in painters:
        raise ValueError(f"defect must be one of {TEXTURE_DEFECTS}, got {defect!r}")
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"image must be a uint8 HxW grey array, got {image.dtype} {image.shape}")
    grey = image.astype(np.float32)
    alpha, colour = painters[defect](grey, rng)
    out = (1 - alpha) * grey + alpha * colour
    return np.clip(np.round(out), 0, 255).astype(np.uint8), alpha >= 0.5


def _canvas_alpha(shape: Tuple[int, ...], draw: Callable[[np.ndarray], None]) -> np.ndarray:
    canvas = np.zeros(shape[:2], np.uint8)
    draw(canvas)
    return canvas.astype(np.float32) / 255


def _centre(shape: Tuple[int, ...], rng: np.random.Generator, margin: float = 0.2) -> np.ndarray:
    h, w = shape[:2]
    return np.array([rng.uniform(margin * w, (1 - margin) * w), rng.uniform(margin * h, (1 - margin) * h)])


def _contrast(grey: np.ndarray, rng: np.random.Generator) -> float:
    """A colour far from the image's mean, so the defect is visible."""
    return rng.uniform(0, 30) if grey.mean() > 110 else rng.uniform(210, 255)


def _scratch(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A thin straight anti-aliased line, 40-110 px long, 1-2 px thick."""
    centre, angle = _centre(grey.shape, rng), rng.uniform(0, np.pi)
    half = rng.uniform(20, 55) * np.array([np.cos(angle), np.sin(angle)])
    p, q = np.round(centre - half).astype(int), np.round(centre + half).astype(int)
    thickness = int(rng.integers(1, 3))
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.line(c, tuple(map(int, p)), tuple(map(int, q)), 255,
                                                         thickness, cv2.LINE_AA))
    return alpha, _contrast(grey, rng)


def _crack(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A dark random walk: 2-px steps whose direction drifts, 60-150 steps."""
    steps = int(rng.integers(60, 151))
    angles = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.3, steps))
    # Steps that leave the image are simply not drawn (OpenCV clips), as a crack would run on.
    points = _centre(grey.shape, rng, 0.3) + np.cumsum(2 * np.stack([np.cos(angles), np.sin(angles)], 1), 0)
    points = np.round(points).astype(np.int32)
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.polylines(c, [points], False, 255, 1, cv2.LINE_AA))
    return alpha, rng.uniform(0, 25)


def _hole(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A round dark hole of radius 5-14 px with an anti-aliased rim."""
    centre = tuple(int(v) for v in np.round(_centre(grey.shape, rng)))
    radius = int(rng.integers(5, 15))
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.circle(c, centre, radius, 255, -1, cv2.LINE_AA))
    return alpha, rng.uniform(0, 20)


def _stain(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A soft blotch of 3 overlapping Gaussians that darkens the texture underneath (it stays visible)."""
    h, w = grey.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centre, blob = _centre(grey.shape, rng, 0.3), np.zeros((h, w), np.float32)
    for _ in range(3):
        cx, cy = centre + rng.normal(0, 8, 2)
        sigma = rng.uniform(6, 14)
        blob += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    alpha = rng.uniform(0.75, 0.95) * np.clip(blob, 0, 1)
    alpha[alpha < 0.02] = 0  # the Gaussian tails would touch every pixel
    return alpha, grey * rng.uniform(0.3, 0.55)


def _missing_chunk(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """An irregular polygon (radius 10-28 px) where the texture is gone: flat colour plus faint noise."""
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(10, 28, n)
    points = _centre(grey.shape, rng) + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    points = np.round(points).astype(np.int32)
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.fillPoly(c, [points], 255, cv2.LINE_AA))
    return alpha, _contrast(grey, rng) + rng.normal(0, 2, grey.shape).astype(np.float32)


def _border_chunk(grey: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A missing chunk (radius 8-16 px) centred within 3 % of a random edge: a defect in the band
    that a centre crop (the MVTec AD objects' evaluation protocol) would not see."""
    h, w = grey.shape
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(8, 16, n)
    along, depth, edge = rng.uniform(0.2, 0.8), rng.uniform(0, 0.03), int(rng.integers(4))
    centre = [(along * w, depth * h), (along * w, (1 - depth) * h), (depth * w, along * h),
              ((1 - depth) * w, along * h)][edge]
    points = np.array(centre) + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    points = np.round(points).astype(np.int32)
    alpha = _canvas_alpha(grey.shape, lambda c: cv2.fillPoly(c, [points], 255, cv2.LINE_AA))
    return alpha, _contrast(grey, rng) + rng.normal(0, 2, grey.shape).astype(np.float32)


# --------------------------------------------------------------------------- MVTec AD download

def download_mvtec(dest: PathLike, url: str = MVTEC_URL, known_hash: str = MVTEC_SHA256,
                   progress: bool = True) -> Path:
    """Download, verify (SHA-256) and extract MVTec AD into ``dest``; returns ``dest``.

    The archive (about 4.9 GB) is streamed into a temporary file next to its final name and
    kept only if its checksum matches, so a failed download leaves nothing behind.  If
    ``dest/mvtec_anomaly_detection.tar.xz`` is already there with the right checksum (e.g.
    downloaded by hand) it is only verified and extracted; once extracted, later calls return at
    once.  A copy you extracted yourself needs none of this: pass its folder as the data root.
    Licence: CC BY-NC-SA 4.0 (do not redistribute).  Book chapter: *Training*.
    """
    import pooch

    if not re.fullmatch(r"[0-9a-fA-F]{64}", str(known_hash)):
        raise ValueError(f"known_hash must be a SHA-256 hex digest (64 hex digits), got {known_hash!r}")
    dest = Path(dest).expanduser()
    done = dest / ".mvtec_extracted"
    if done.is_file() and done.read_text() == known_hash:
        return dest
    try:
        archive = pooch.retrieve(url, known_hash=f"sha256:{known_hash}", fname=MVTEC_ARCHIVE,
                                 path=dest, progressbar=progress)
    except Exception as error:  # network errors of any kind and checksum mismatches
        raise RuntimeError(_hand_download_message(url, dest, known_hash, error)) from error
    _extract(Path(archive), dest, progress)
    atomic_write(done, lambda tmp: tmp.write_text(known_hash))
    return dest


def _hand_download_message(url: str, dest: Path, known_hash: str, error: Exception) -> str:
    archive = dest / MVTEC_ARCHIVE
    present = (f"\nThe file already at {archive} does not have the expected checksum (incomplete or "
               "another version): replace it." if archive.is_file() else "")
    return (f"Could not download MVTec AD from {url}\n({type(error).__name__}: {error}).{present}\n"
            f"Download {MVTEC_ARCHIVE} by hand (from that address, or via {MVTEC_PAGE}) and save it as\n"
            f"    {archive}\n"
            f"The next download_mvtec({str(dest)!r}) call then only verifies its SHA-256 "
            f"({known_hash}) and extracts it.")


def _extract(archive: Path, dest: Path, progress: bool) -> None:
    """Extract in one streaming pass (``extractall`` would decompress the xz archive twice);
    the ``data`` filter refuses absolute paths and links that leave ``dest``."""
    from tqdm.auto import tqdm

    with tarfile.open(archive, "r|*") as tar:
        for member in tqdm(tar, desc=f"extracting {archive.name}", unit=" files", disable=not progress):
            tar.extract(member, dest, filter="data")


# --------------------------------------------------------------------------- chest X-rays (rCXR)

_NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient Age", "Patient Gender", "View Position")


def prepare_rcxr(nih_root: PathLike, out_root: PathLike, gender: str, file_list: Optional[PathLike] = None,
                 seed: int = 0, size: int = 256) -> Path:
    """Write the rCXR category ``rcxr_<gender>`` (paper Sec. 4.3) from NIH ChestX-ray14.

    Filter of ``Data_Entry_2017*.csv``: View Position PA, age > 18, the given gender; normal =
    "No Finding", everything else abnormal.  ``file_list`` (one image name per line, e.g. the
    curated subset of Tang et al. 2020 the paper uses) restricts the set further.  Split (fixed
    ``seed``): normal images are shuffled; the paper's share of them (male 299 of 1973 + 299,
    female 244 of 1641 + 244) goes to ``test/good``, the rest to ``train/good``, and shuffled
    abnormal images to ``test/abnormal``, each capped at the paper's counts (male 1973 / 299 + 139,
    female 1641 / 244 + 123, :data:`RCXR_PAPER_COUNTS`).  Images are stored as ``size`` px grey
    PNGs.  Returns ``out_root``, the root for :func:`load_category`.  Book chapter: *Beyond MVTec AD*.
    """
    if gender not in RCXR_PAPER_COUNTS:
        raise ValueError(f"gender must be 'male' or 'female', got {gender!r}")
    nih_root, out_root = Path(nih_root).expanduser(), Path(out_root).expanduser()
    normal, abnormal = rcxr_filter(_read_nih_csv(nih_root), gender)
    names = None
    if file_list is not None:
        names = {Path(line.strip()).name for line in Path(file_list).read_text().splitlines()} - {""}
        normal, abnormal = [n for n in normal if n in names], [n for n in abnormal if n in names]
    found = _find_nih_images(nih_root)
    missing = [n for n in normal + abnormal if n not in found]
    if missing:
        warnings.warn(f"{len(missing)} selected images are not under {nih_root} (e.g. {missing[0]}); "
                      "they are left out", stacklevel=2)
    split = _rcxr_split([n for n in normal if n in found], [n for n in abnormal if n in found], gender, seed)
    digest = hashlib.sha256("\n".join(sorted(names or [])).encode()).hexdigest()[:16]
    tag = f"rcxr v{_CACHE_VERSION} seed={seed} size={size} list={digest} n={sorted(map(len, split.values()))}"

    def build(folder: Path) -> None:
        for sub, chosen in split.items():
            for name in chosen:
                grey = read_image(found[name])[:, :, 0]
                _write_png(folder / sub / f"{Path(name).stem}.png", resize_image(grey, size))

    out_root.mkdir(parents=True, exist_ok=True)
    _materialise(out_root / f"rcxr_{gender}", tag, build)
    return out_root


def _read_nih_csv(nih_root: Path) -> List[Dict[str, str]]:
    candidates = sorted(nih_root.glob("Data_Entry_2017*.csv"))
    if not candidates:
        raise FileNotFoundError(f"no Data_Entry_2017.csv in {nih_root}; expected the NIH ChestX-ray14 folder "
                                "with its label file and images_*/ folders")
    with open(candidates[0], newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in _NIH_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"{candidates[0]} lacks the columns {absent}; expected {list(_NIH_COLUMNS)}")
        return list(reader)


def rcxr_filter(rows: Sequence[Dict[str, str]], gender: str) -> Tuple[List[str], List[str]]:
    """The rCXR selection: PA view, age > 18, one gender; returns sorted (normal, abnormal) image names.

    Ages are read as their leading digits (older files write ``058Y``).
    """
    code = {"male": "M", "female": "F"}[gender]
    normal, abnormal = [], []
    for row in rows:
        age = re.match(r"\s*(\d+)", row["Patient Age"])
        if row["View Position"].strip() != "PA" or row["Patient Gender"].strip() != code:
            continue
        if age is None or int(age.group(1)) <= 18:
            continue
        target = normal if row["Finding Labels"].strip() == "No Finding" else abnormal
        target.append(row["Image Index"].strip())
    return sorted(normal), sorted(abnormal)


def _find_nih_images(nih_root: Path) -> Dict[str, Path]:
    """Image name -> path, from ``images*/`` folders (flat or with an inner ``images/``)."""
    folders = [p for p in nih_root.glob("images*") if p.is_dir()] + list(nih_root.glob("**/images"))
    return {p.name: p for folder in folders for p in folder.glob("*.png")}


def _rcxr_split(normal: List[str], abnormal: List[str], gender: str, seed: int) -> Dict[str, List[str]]:
    n_train, n_test, n_abnormal = RCXR_PAPER_COUNTS[gender]
    rng = np.random.default_rng(seed)
    normal, abnormal = list(rng.permutation(normal)), list(rng.permutation(abnormal))
    test = min(n_test, round(len(normal) * n_test / (n_train + n_test)))
    if test < 1 or len(normal) - test < 2 or not abnormal:
        raise ValueError(f"too few images for rCXR ({len(normal)} normal, {len(abnormal)} abnormal found); "
                         "need at least 3 normal and 1 abnormal")
    return {"train/good": normal[test:test + n_train], "test/good": normal[:test],
            "test/abnormal": abnormal[:n_abnormal]}


# --------------------------------------------------------------------------- the training set

class SyntheticAnomalyDataset(Dataset):
    """Self-supervised training samples: a normal image with synthetic anomalies and its label map.

    All training images are loaded once, resized to ``config.resize`` (uint8, in memory).
    Sample ``i`` of epoch ``e`` draws everything from ``default_rng([seed, e, i])``, so a seed
    gives the same samples for any number of DataLoader workers.  Call :meth:`set_epoch` before
    each epoch (workers get a fresh copy of the dataset when an epoch's iteration starts).
    ``synthesize`` defaults to :func:`nsa_tutorial.synthesis.synthesize`.  Book chapter: *Training*.
    """

    def __init__(self, category: Category, config, seed: int = 0,
                 synthesize: Optional[Callable] = None) -> None:
        if len(category.train) < 2:
            raise ValueError(f"{category.name}: at least 2 training images are needed (the source patch "
                             f"comes from another image), found {len(category.train)}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.category, self.config, self.seed, self.epoch = category, config, int(seed), 0
        self.synthesize = synthesize
        #: True: items are the augmented ``(dest, src)`` uint8 pairs, for synthesis on the
        #: training device (:mod:`nsa_tutorial.batched`; :func:`nsa_tutorial.train.train` sets it)
        self.pairs_only = False
        self.images = [resize_image(read_image(p), config.resize) for p in category.train]

    def __len__(self) -> int:
        return len(self.images)

    def files(self) -> List[Tuple[str, int]]:
        """Names and sizes of the training files (see :meth:`Category.train_files`)."""
        return self.category.train_files()

    def set_epoch(self, epoch: int) -> None:
        """Samples of epoch ``epoch`` differ from other epochs' and are reproducible."""
        self.epoch = int(epoch)

    def augment(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Rotation up to ``config.rotation`` degrees, centre crop ``config.crop``, random crop
        ``config.image_size`` and a random vertical flip if ``config.vflip`` (paper Sec. 4.1)."""
        c = self.config
        if c.rotation > 0:
            h, w = image.shape[:2]
            angle = rng.uniform(-c.rotation, c.rotation)
            matrix = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1)
            # Reflected borders: rotation should not add black corners that look like background.
            image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
        if c.crop is not None:
            top, left = (image.shape[0] - c.crop) // 2, (image.shape[1] - c.crop) // 2
            image = image[top:top + c.crop, left:left + c.crop]
        top = int(rng.integers(0, image.shape[0] - c.image_size + 1))
        left = int(rng.integers(0, image.shape[1] - c.image_size + 1))
        image = image[top:top + c.image_size, left:left + c.image_size]
        if c.vflip and rng.random() < 0.5:
            image = image[::-1]
        return np.ascontiguousarray(image)

    def pair(self, index: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, int]:
        """``(dest, src, src_index)``: image ``index`` and another random training image, each augmented."""
        dest = self.augment(self.images[index], rng)
        other = int(rng.integers(len(self.images) - 1))
        other += other >= index  # any image but the destination
        return dest, self.augment(self.images[other], rng), other

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        dest, src, _ = self.pair(int(index), rng)
        if self.pairs_only:
            return torch.from_numpy(dest), torch.from_numpy(src)
        synthesize = self.synthesize
        if synthesize is None:
            from nsa_tutorial.synthesis import synthesize
        image, label = synthesize(dest, src, self.config, rng)
        label = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None]
        return to_tensor(image, self.config.normalize), label
