"""Golden outputs: seeded results of synthesis, the batched path, the training set, the embedded
textures and a short training run, as SHA-256 digests recorded at a known commit.

A change that is meant to preserve behaviour (moving code, renaming, tables instead of branches)
must leave every digest as it is: this test is what shows byte-identity.  A change that alters
results on purpose updates ``tests/data/golden.json`` in its own commit that says why
(``NSA_GOLDEN_RECORD=1 python -m pytest tests/test_golden.py`` rewrites it).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nsa_tutorial.config import LABELS, VARIANTS, get_config

GOLDEN = Path(__file__).parent / "data" / "golden.json"
RECORD = os.environ.get("NSA_GOLDEN_RECORD") == "1"
SIZE = 96


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _pair(real_image, name):
    dest, src = {"bottle": ("coffee", "astronaut"), "carpet": ("brick", "gravel")}[name]
    return real_image(dest, SIZE), real_image(src, SIZE)


def _synthesis_cases():
    for name in ("bottle", "carpet"):
        for method in ("nsa", "cutpaste", "fpi", "pii"):
            for label in (LABELS if method == "nsa" else ("binary",)):
                for variant in (VARIANTS if method == "nsa" else (None,)):
                    for backend in ("fast", "opencv"):
                        yield name, method, label, variant, backend


def _config(name, **kw):
    return get_config(name, image_size=SIZE, **kw)


def compute_synthesis(real_image) -> dict:
    from nsa_tutorial.synthesis import make_anomaly

    out = {}
    for name, method, label, variant, backend in _synthesis_cases():
        config = _config(name, method=method, label=label, variant=variant)
        dest, src = _pair(real_image, name)
        parts = []
        for seed in range(3):
            a = make_anomaly(dest, src, config, np.random.default_rng(seed), backend)
            parts += [a.image, a.label, a.region, np.array(a.source_rects + a.dest_rects, np.int64).ravel(),
                      np.array([a.attempted, a.skipped])]
        out[f"{name}/{method}/{label}/{variant}/{backend}"] = _digest(*parts)
    return out


def compute_batched(real_image) -> dict:
    from nsa_tutorial.batched import make_anomaly_batch

    out = {}
    for name in ("bottle", "carpet"):
        dest, src = _pair(real_image, name)
        if dest.ndim == 2:
            dest, src = (np.repeat(x[:, :, None], 3, 2) for x in (dest, src))
        dest_b = torch.from_numpy(np.stack([dest, src, dest, src]))
        src_b = torch.from_numpy(np.stack([src, dest, src, dest]))
        for label in LABELS:
            for variant in (None, "A", "B"):
                config = _config(name, label=label, variant=variant)
                a = make_anomaly_batch(dest_b, src_b, config, torch.Generator().manual_seed(7))
                out[f"{name}/{label}/{variant}"] = _digest(
                    a.images.numpy(), a.labels.numpy(), a.region.numpy(), a.source_rects.numpy(),
                    a.dest_rects.numpy(), a.attempted.numpy(), a.placed.numpy())
    return out


def _category(tmp_path, real_image):
    import cv2

    from nsa_tutorial.layout import Category

    folder = tmp_path / "data" / "cat" / "train" / "good"
    folder.mkdir(parents=True)
    for i, name in enumerate(("coffee", "astronaut", "chelsea", "camera")):
        image = real_image(name, 80)
        cv2.imwrite(str(folder / f"{i}.png"), image if image.ndim == 2 else image[:, :, ::-1])
    return Category(root=tmp_path / "data", name="cat", train=sorted(folder.iterdir()), test=[],
                    has_masks=False)


def compute_dataset(tmp_path, real_image) -> dict:
    from nsa_tutorial.training_set import SyntheticAnomalyDataset

    category = _category(tmp_path, real_image)
    out = {}
    for name in ("bottle", "carpet"):
        config = get_config(name, image_size=64)
        dataset = SyntheticAnomalyDataset(category, config, seed=3)
        parts = []
        for epoch in (0, 2):
            dataset.set_epoch(epoch)
            for i in range(len(dataset)):
                image, label = dataset[i]
                parts += [image.numpy(), label.numpy()]
        out[name] = _digest(*parts)
    return out


def compute_textures(tmp_path) -> dict:
    from nsa_tutorial.defects import TEXTURE_DEFECTS, add_texture_defect
    from nsa_tutorial.sources import resolve_data_root

    out = {}
    rng = np.random.default_rng(11)
    grey = np.full((128, 128), 90, np.uint8) + rng.integers(0, 40, (128, 128)).astype(np.uint8)
    for defect in TEXTURE_DEFECTS:
        parts = []
        for seed in range(3):
            parts += list(add_texture_defect(grey, defect, np.random.default_rng(seed)))
        out[f"defect/{defect}"] = _digest(*parts)
    root = resolve_data_root("textures", cache_dir=tmp_path / "cache")
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.png")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    out["embedded_textures"] = h.hexdigest()
    return out


def compute_training(tmp_path, real_image) -> dict:
    """Seed-stream dependent: the shuffle order and the synthesis generator of each epoch."""
    from nsa_tutorial.training_set import SyntheticAnomalyDataset
    from nsa_tutorial.train import train

    category = _category(tmp_path, real_image)
    config = get_config("bottle", image_size=64, mode="quick").replace(batch_size=2, epochs=2)
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for on_device in (False, True):
            dataset = SyntheticAnomalyDataset(category, config, seed=0)
            history = train(config, dataset, tmp_path / f"run{on_device}", device="cpu", seed=5,
                            progress=False, synthesis_on_device=on_device, max_steps_per_epoch=4)
            out[f"losses/on_device={on_device}"] = _digest(np.array(history["loss"], np.float64))
    finally:
        torch.set_num_threads(threads)
    return out


def compute_all(tmp_path, real_image) -> dict:
    return {"synthesis": compute_synthesis(real_image), "batched": compute_batched(real_image),
            "dataset": compute_dataset(tmp_path / "ds", real_image), "textures": compute_textures(tmp_path / "tx"),
            "training": compute_training(tmp_path / "tr", real_image)}


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


@pytest.mark.parametrize("group", ["synthesis", "batched", "dataset", "textures", "training"])
def test_seeded_outputs_are_byte_identical_to_the_recorded_ones(group, golden, tmp_path, real_image):
    compute = {"synthesis": lambda: compute_synthesis(real_image), "batched": lambda: compute_batched(real_image),
               "dataset": lambda: compute_dataset(tmp_path, real_image), "textures": lambda: compute_textures(tmp_path),
               "training": lambda: compute_training(tmp_path, real_image)}[group]
    digests = compute()
    if RECORD:
        golden[group] = digests
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
        pytest.skip("recorded")
    assert group in golden, f"no recorded digests for {group}; record with NSA_GOLDEN_RECORD=1"
    changed = sorted(k for k in golden[group] if digests.get(k) != golden[group][k])
    assert not changed and set(digests) == set(golden[group]), f"outputs changed: {changed}"
