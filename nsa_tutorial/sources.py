"""Where the data comes from: the MVTec AD download, the embedded datasets and chest X-rays.

Book chapters: *Training* (the MVTec AD download) and *Beyond MVTec AD* (the embedded solar
cells and textures, chest X-rays).  Every dataset is written in MVTec AD layout
(:mod:`nsa_tutorial.layout`); the embedded ones into a cache folder on first use
(:func:`resolve_data_root`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import tarfile
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .defects import TEXTURE_DEFECTS, add_texture_defect
from .files import atomic_write
from .layout import PathLike, _write_png, read_image, resize_image

# The MVTec AD archive; its host has moved it several times, so the address lives here only.
MVTEC_URL = ("https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/"
             "420938113-1629960298/mvtec_anomaly_detection.tar.xz")
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_ARCHIVE = "mvtec_anomaly_detection.tar.xz"
MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"

EMBEDDED = ("elpv", "textures")
ELPV_CATEGORIES = ("mono", "poly")
ELPV_TEST_FRACTION = 0.2  # of the normal cells; all fully defective cells go to the test set
SKIMAGE_TEXTURES = ("brick", "grass", "gravel")  # scikit-image textures (not MVTec AD's config.TEXTURES)
TEXTURE_CATEGORIES = tuple(f"texture_{name}" for name in SKIMAGE_TEXTURES)
TEXTURE_COUNTS = {"train": 60, "good": 20, "defect": 8}  # images per category (defect: per type)
TEXTURE_SIZE = 256
# (train normal, test normal, test abnormal) in the paper's rCXR (Sec. 4.3).
RCXR_PAPER_COUNTS = {"male": (1973, 299, 139), "female": (1641, 244, 123)}

_MARKER = ".nsa_tutorial_complete"
_CACHE_VERSION = "2"  # bump when a materialised dataset's content changes
_SEED = 20220723  # fixed seed of the embedded datasets' splits and defects


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

    for k, name in enumerate(SKIMAGE_TEXTURES):
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
