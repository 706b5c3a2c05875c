"""Datasets in MVTec AD layout: reading images and masks, categories and their test items.

Book chapters: *Evaluation* (test items and masks) and *Beyond MVTec AD* (your own folders).

Every dataset is a folder in MVTec AD layout, read by one loader::

    root/<category>/train/good/*.png          normal training images
    root/<category>/test/good/*.png           normal test images
    root/<category>/test/<defect>/*.png       anomalous test images (any folder but ``good``)
    root/<category>/ground_truth/<defect>/<stem>_mask.png   optional 0/255 masks

The embedded datasets (``"elpv"`` solar cells, ``"textures"``) are written into this
layout in a cache folder on first use (:func:`nsa_tutorial.sources.resolve_data_root`).

Images that a user hands to a trained model (files, folders or arrays) are found by
:func:`collect_images`, read by :func:`read_images` and batched at the model's input size by
:func:`image_batches`; calibration and prediction read them this way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, Path]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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

class ChannelsError(ValueError):
    """An image whose number of channels cannot be brought to the model's 3."""


def as_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """The one RGB rule: uint8 HxW, HxWx1, HxWx3 or HxWx4 (RGBA) -> HxWx3, grey repeated to three
    channels (one model shape serves every class) and alpha dropped.

    Used by :func:`read_image`, synthesis (:func:`nsa_tutorial.synthesis.make_anomaly`) and
    prediction.  Other types and shapes are a ``ValueError`` that says what was expected;
    another number of channels a :class:`ChannelsError`.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0-255), got {image.dtype}; convert float images in "
                         "[0, 1] with (img * 255).round().astype(np.uint8) and 16-bit ones with img // 257")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"{name} must be HxW or HxWxC, got shape {image.shape}")
    if image.shape[2] not in (1, 3, 4):
        raise ChannelsError(f"{name}: {image.shape[2]} channels cannot be brought to the model's 3 "
                            "(expected 1 = grey, 3 = RGB or 4 = RGBA)")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return image if image.shape[2] == 3 else np.ascontiguousarray(image[:, :, :3])


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
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, 2::-1] if image.shape[2] == 3 else image[:, :, [2, 1, 0, 3]]  # OpenCV's BGR(A)
    return np.ascontiguousarray(as_rgb(image, str(path)))


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


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


# --------------------------------------------------------------------------- images given by a user

ImageInput = Union[str, Path, np.ndarray]


def collect_images(inputs: Union[ImageInput, Iterable[ImageInput]]) -> List[Tuple[str, ImageInput]]:
    """``(name, path or array)`` of every image: files as given, folders searched recursively
    (``.png/.jpg/.jpeg``), arrays named ``image_0000``...; names are unique."""
    if isinstance(inputs, (str, Path, np.ndarray)):
        inputs = [inputs]
    items: List[Tuple[str, ImageInput]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, np.ndarray):
            items.append((f"image_{i:04d}", item))
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise ValueError(f"folder {path} holds no images (expected files ending in "
                                 f"{', '.join(IMAGE_SUFFIXES)})")
            items += [(p.relative_to(path).with_suffix("").as_posix(), p) for p in found]
        elif path.is_file():
            items.append((path.stem, path))
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder")
    if not items:
        raise ValueError("no images given")
    seen: dict = {}
    unique = []
    for name, item in items:
        seen[name] = seen.get(name, 0) + 1
        unique.append((name if seen[name] == 1 else f"{name}-{seen[name]}", item))
    return unique


def read_images(items) -> Iterator[Tuple[str, Optional[np.ndarray], Optional[str]]]:
    """``(name, RGB image or None, why it was skipped)``; corrupt files are skipped, images whose
    channels do not fit the model are an error."""
    for i, item in enumerate(items):
        name, item = item if isinstance(item, tuple) else (Path(item).stem if not isinstance(item, np.ndarray)
                                                          else f"image_{i:04d}", item)
        if isinstance(item, np.ndarray):
            yield name, as_rgb(item, name), None
            continue
        try:
            yield name, read_image(item), None
        except ChannelsError:
            raise  # a readable image the model cannot take: an error, not a skipped file
        except (ValueError, FileNotFoundError) as err:
            yield name, None, str(err)


def image_batches(read: Iterator, size: int, batch_size: int, skipped: Optional[list] = None):
    """Batches of ``(uint8 B x size x size x 3, [(name, image), ...])`` from :func:`read_images`."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    entries: list = []
    for name, image, error in read:
        if image is None:
            if skipped is not None:
                skipped.append({"name": name, "error": error})
            continue
        entries.append((name, image))
        if len(entries) == batch_size:
            yield np.stack([resize_image(im, size) for _, im in entries]), entries
            entries = []
    if entries:
        yield np.stack([resize_image(im, size) for _, im in entries]), entries
