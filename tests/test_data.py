"""Tests of the data modules (layout, sources, defects, training_set): MVTec AD layout, embedded datasets, download, rCXR, training set."""

import csv
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nsa_tutorial import defects, layout, sources, training_set
from nsa_tutorial.config import get_config

def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def _noise(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def make_category(root: Path, name="widget", masks=True, size=24, n_train=3, ext=".png", grey=False):
    """A small MVTec AD tree: train/good, test/good, test/crack (+ ground_truth/crack)."""
    shape = (size, size) if grey else (size, size, 3)
    folder = root / name
    for i in range(n_train):
        _write(folder / "train" / "good" / f"{i:03d}{ext}", _noise(shape, i))
    for i in range(2):
        _write(folder / "test" / "good" / f"{i:03d}{ext}", _noise(shape, 100 + i))
        _write(folder / "test" / "crack" / f"{i:03d}{ext}", _noise(shape, 200 + i))
        if masks:
            mask = np.zeros((size, size), np.uint8)
            mask[2 + i:9 + i, 3:17] = 255
            _write(folder / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return folder


# --------------------------------------------------------------------------- layout and reading

def test_load_category_with_masks(tmp_path):
    folder = make_category(tmp_path)
    cat = layout.load_category(tmp_path, "widget")
    assert cat.has_masks and cat.name == "widget" and cat.root == tmp_path
    assert cat.train == sorted((folder / "train" / "good").iterdir())
    assert [(t.defect, t.label) for t in cat.test] == [("crack", 1)] * 2 + [("good", 0)] * 2
    for item in cat.test:
        assert (item.mask_path is None) == (item.label == 0)
    crack = cat.test[1]
    assert crack.mask_path == folder / "ground_truth" / "crack" / "001_mask.png"
    mask_full = cv2.imread(str(crack.mask_path), cv2.IMREAD_GRAYSCALE) > 0
    image, mask = layout.load_test_item(crack, 24)  # same size: exact
    np.testing.assert_array_equal(mask, mask_full)
    np.testing.assert_array_equal(image, cv2.imread(str(crack.path))[:, :, ::-1])
    image, mask = layout.load_test_item(crack, 12)  # shrink: INTER_AREA / nearest, as OpenCV does
    ref = cv2.resize(cv2.imread(str(crack.path))[:, :, ::-1], (12, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(image, ref)
    ref_mask = cv2.resize(mask_full.astype(np.uint8), (12, 12), interpolation=cv2.INTER_NEAREST) > 0
    np.testing.assert_array_equal(mask, ref_mask)
    assert image.dtype == np.uint8 and mask.dtype == bool
    image, mask = layout.load_test_item(crack, 40)  # enlarge: bilinear
    ref = cv2.resize(cv2.imread(str(crack.path))[:, :, ::-1], (40, 40), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(image, ref)
    good_image, good_mask = layout.load_test_item(cat.test[2], 16)
    assert good_image.shape == (16, 16, 3) and not good_mask.any()


def test_load_category_without_masks_warns(tmp_path):
    make_category(tmp_path, masks=False)
    with pytest.warns(UserWarning, match="image-level"):
        cat = layout.load_category(tmp_path, "widget")
    assert not cat.has_masks
    anomalous = [t for t in cat.test if t.label == 1]
    assert anomalous and all(t.mask_path is None for t in anomalous)
    _, mask = layout.load_test_item(anomalous[0], 16)
    assert mask.shape == (16, 16) and not mask.any()


def test_grayscale_jpg_alpha_and_16bit(tmp_path):
    make_category(tmp_path, grey=True, ext=".JPG", masks=False)
    with pytest.warns(UserWarning):
        cat = layout.load_category(tmp_path, "widget")
    assert len(cat.train) == 3 and all(p.suffix == ".JPG" for p in cat.train)
    image = layout.read_image(cat.train[0])
    grey = cv2.imread(str(cat.train[0]), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2 and image.shape == grey.shape + (3,) and image.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], grey)
    rgba = _noise((8, 9, 4), 1)  # cv2 stores BGRA
    np.testing.assert_array_equal(layout.read_image(_write(tmp_path / "a.png", rgba)), rgba[:, :, 2::-1])
    deep = np.random.default_rng(2).integers(0, 65536, (8, 8), dtype=np.uint16)
    out = layout.read_image(_write(tmp_path / "d.png", deep))
    np.testing.assert_array_equal(out[:, :, 0], np.round(deep / 257).astype(np.uint8))


@pytest.mark.parametrize("content", ["garbage", "truncated", "empty"])
def test_corrupt_image_is_named(tmp_path, content):
    good = _write(tmp_path / "ok.png", _noise((32, 32, 3), 3)).read_bytes()
    payload = {"garbage": b"not an image at all", "truncated": good[: len(good) // 2], "empty": b""}[content]
    bad = tmp_path / "bad.png"
    bad.write_bytes(payload)
    with pytest.raises(ValueError, match=str(bad)):
        layout.read_image(bad)


def test_mask_size_mismatch_names_both_files(tmp_path):
    folder = make_category(tmp_path)
    _write(folder / "ground_truth" / "crack" / "000_mask.png", np.zeros((10, 11), np.uint8))
    cat = layout.load_category(tmp_path, "widget")
    with pytest.raises(ValueError) as err:
        layout.load_test_item(cat.test[0], 16)
    assert "000_mask.png" in str(err.value) and str(cat.test[0].path) in str(err.value)


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        layout.load_category(tmp_path / "nowhere", "widget")
    make_category(tmp_path, name="widget")
    make_category(tmp_path, name="gadget")
    with pytest.raises(FileNotFoundError, match=r"\['gadget', 'widget'\]"):
        layout.load_category(tmp_path, "bottle")
    with pytest.raises(ValueError, match="parent"):
        layout.load_category(tmp_path / "widget", "train")
    with pytest.raises(FileNotFoundError, match="parent"):
        layout.load_category(tmp_path / "widget", "bottle")
    (tmp_path / "flat").mkdir()
    _write(tmp_path / "flat" / "0.png", _noise((8, 8), 0))
    with pytest.raises(ValueError, match="MVTec AD layout"):
        layout.load_category(tmp_path, "flat")
    empty = make_category(tmp_path, name="empty", n_train=0)
    (empty / "train" / "good").mkdir(parents=True)
    (empty / "train" / "good" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no training images"):
        layout.load_category(tmp_path, "empty")
    lost = tmp_path / "widget" / "ground_truth" / "crack" / "001_mask.png"
    lost.unlink()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "widget" / "test" / "crack" / "001.png")):
        layout.load_category(tmp_path, "widget")


def test_to_tensor_matches_formula():
    image = _noise((5, 7, 3), 4)
    expected = (image.astype(np.float32) / 255 - np.array(training_set.IMAGENET_MEAN)) / np.array(training_set.IMAGENET_STD)
    tensor = training_set.to_tensor(image, "imagenet")
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 5, 7)
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), expected, rtol=1e-5, atol=1e-6)
    plain = training_set.to_tensor(image, "none")
    np.testing.assert_allclose(plain.permute(1, 2, 0).numpy(), image / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        training_set.to_tensor(image[:, :, 0])
    with pytest.raises(ValueError, match="normalize"):
        training_set.to_tensor(image, "z-score")


def test_resolve_data_root(tmp_path):
    assert sources.resolve_data_root(tmp_path) == tmp_path
    assert sources.resolve_data_root(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match="folder") as err:
        sources.resolve_data_root("mvtec-on-the-moon", cache_dir=tmp_path)
    assert all(name in str(err.value) for name in sources.EMBEDDED)


def test_materialise_redoes_interrupted_build(tmp_path):
    def broken(folder):
        (folder / "half.txt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sources._materialise(tmp_path / "set", "v1", broken)
    assert not (tmp_path / "set").exists()  # nothing half-written under the final name
    calls = []
    sources._materialise(tmp_path / "set", "v1", lambda f: calls.append((f / "ok.txt").write_text("y")))
    sources._materialise(tmp_path / "set", "v1", lambda f: calls.append("again"))
    assert len(calls) == 1 and sorted(p.name for p in (tmp_path / "set").iterdir()) == [sources._MARKER, "ok.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # the side folder is gone
    sources._materialise(tmp_path / "set", "v2", lambda f: calls.append("rebuilt"))
    assert calls[-1] == "rebuilt" and not (tmp_path / "set" / "ok.txt").exists()
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not made by nsa_tutorial"):
        sources._materialise(tmp_path / "mine", "v1", lambda f: None)


# --------------------------------------------------------------------------- MVTec AD download

class _Server:
    """A loopback HTTP server serving one archive, whole or cut off halfway."""

    def __init__(self, payload: bytes):
        self.payload, self.truncate, self.hits = payload, False, 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(owner.payload)))
                self.end_headers()
                body = owner.payload[: len(owner.payload) // 2] if owner.truncate else owner.payload
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{sources.MVTEC_ARCHIVE}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def archive(module_tmp):
    source = make_category(module_tmp("src"), name="bottle")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        tar.add(source, arcname="bottle")
    payload = buffer.getvalue()
    server = _Server(payload)
    yield payload, hashlib.sha256(payload).hexdigest(), server
    server.httpd.shutdown()


def test_download_extracts_and_reuses_archive(tmp_path, archive):
    payload, digest, server = archive
    server.truncate, hits = False, server.hits
    root = sources.download_mvtec(tmp_path / "mvtec", url=server.url, known_hash=digest, progress=False)
    assert server.hits == hits + 1
    assert (root / sources.MVTEC_ARCHIVE).read_bytes() == payload
    assert len(layout.load_category(root, "bottle").train) == 3
    # Archive present (e.g. downloaded by hand), not yet extracted: verified and extracted, no request.
    again = tmp_path / "by_hand"
    again.mkdir()
    (again / sources.MVTEC_ARCHIVE).write_bytes(payload)
    sources.download_mvtec(again, url=server.url, known_hash=digest, progress=False)
    assert server.hits == hits + 1 and (again / "bottle" / "train" / "good" / "000.png").is_file()
    sources.download_mvtec(root, url=server.url, known_hash=digest, progress=False)
    assert server.hits == hits + 1


@pytest.mark.parametrize("failure", ["bad checksum", "interrupted", "unreachable"])
def test_download_failure_explains_hand_download(tmp_path, archive, failure):
    payload, digest, server = archive
    server.truncate = failure == "interrupted"
    url = "http://127.0.0.1:9/nothing.tar.xz" if failure == "unreachable" else server.url
    known = hashlib.sha256(b"other").hexdigest() if failure == "bad checksum" else digest
    dest = tmp_path / "mvtec"
    with pytest.raises(RuntimeError) as err:
        sources.download_mvtec(dest, url=url, known_hash=known, progress=False)
    message = str(err.value)
    assert url in message and str(dest / sources.MVTEC_ARCHIVE) in message and "by hand" in message
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial download left


def test_download_validates_hash(tmp_path):
    with pytest.raises(ValueError, match="SHA-256"):
        sources.download_mvtec(tmp_path, url="http://127.0.0.1:9/x", known_hash="md5:abc")


# --------------------------------------------------------------------------- embedded: solar cells

@pytest.fixture(scope="module")
def elpv(module_tmp):
    from elpv_dataset import utils

    loaded = utils.load_dataset()  # a few seconds: once per session
    cache = module_tmp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(utils, "load_dataset", lambda: loaded)
        root = sources.resolve_data_root("elpv", cache_dir=cache)
    return root, cache, loaded


def test_elpv_counts_follow_probabilities(elpv):
    root, _, (images, probs, types) = elpv
    assert layout.list_categories(root) == list(sources.ELPV_CATEGORIES)
    for kind in sources.ELPV_CATEGORIES:
        with pytest.warns(UserWarning, match="image-level"):
            cat = layout.load_category(root, kind)
        normal = np.flatnonzero((types == kind) & (probs == 0))
        defective = np.flatnonzero((types == kind) & (probs == 1))
        index = lambda p: int(p.stem.removeprefix("cell"))  # noqa: E731
        test_good = {index(t.path) for t in cat.test if t.label == 0}
        assert {index(t.path) for t in cat.test if t.label == 1} == set(defective)
        assert {index(p) for p in cat.train} | test_good == set(normal)
        assert not test_good & {index(p) for p in cat.train}
        assert len(test_good) == round(sources.ELPV_TEST_FRACTION * len(normal))
        for path in (cat.train[0], cat.test[-1].path):  # pixels written losslessly
            np.testing.assert_array_equal(layout.read_image(path)[:, :, 0], images[index(path)])


def test_elpv_is_built_once(elpv, monkeypatch):
    root, cache, _ = elpv
    stamp = (root / sources._MARKER).stat().st_mtime_ns
    monkeypatch.setattr(sources, "_build_elpv", lambda folder: pytest.fail("rebuilt"))
    assert sources.resolve_data_root("elpv", cache_dir=cache) == root
    assert (root / sources._MARKER).stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------- embedded: textures

@pytest.fixture(scope="module")
def textures(module_tmp):
    return sources.resolve_data_root("textures", cache_dir=module_tmp("cache"))


def test_textures_layout_and_masks(textures):
    assert layout.list_categories(textures) == list(sources.TEXTURE_CATEGORIES)
    cat = layout.load_category(textures, "texture_gravel")
    counts = sources.TEXTURE_COUNTS
    assert len(cat.train) == counts["train"] and cat.has_masks
    assert sorted({t.defect for t in cat.test}) == sorted(defects.TEXTURE_DEFECTS + ("good",))
    assert sum(t.label for t in cat.test) == counts["defect"] * len(defects.TEXTURE_DEFECTS)
    for item in cat.test[:: 4]:
        _, mask = layout.load_test_item(item, sources.TEXTURE_SIZE)
        assert mask.any() == (item.label == 1)
        assert mask.sum() < 0.1 * mask.size


def _locate(crop: np.ndarray, source: np.ndarray) -> set:
    """Rows (0 = top half, 256 = bottom half) where one of the 8 symmetries of ``crop`` is an exact crop."""
    size, found = crop.shape[0], set()
    for k in range(4):
        for variant in (np.rot90(crop, k), np.rot90(crop, k)[:, ::-1]):
            for top in (0, source.shape[0] - size):
                band = source[top:top + size]
                first_rows = np.lib.stride_tricks.sliding_window_view(band[0], size)
                for x in np.flatnonzero((first_rows == variant[0]).all(axis=1)):
                    if np.array_equal(band[:, x:x + size], variant):
                        found.add(top)
    return found


def test_textures_train_and_test_share_no_pixels(textures):
    import skimage.data

    source = skimage.data.brick()
    cat = layout.load_category(textures, "texture_brick")
    for path in cat.train[:8]:
        assert _locate(layout.read_image(path)[:, :, 0], source) == {0}
    for item in [t for t in cat.test if t.label == 0][:8]:
        assert _locate(layout.read_image(item.path)[:, :, 0], source) == {source.shape[0] - sources.TEXTURE_SIZE}


def test_textures_are_deterministic(textures, tmp_path):
    other = sources.resolve_data_root("textures", cache_dir=tmp_path)
    files = sorted(p.relative_to(textures) for p in textures.rglob("*.png"))
    assert files == sorted(p.relative_to(other) for p in other.rglob("*.png"))
    for rel in files[:: 7]:
        assert (textures / rel).read_bytes() == (other / rel).read_bytes()


@pytest.mark.parametrize("defect", defects.TEXTURE_DEFECTS)
def test_texture_defect_changes_pixels_where_the_mask_says(defect):
    import skimage.data

    clean = np.ascontiguousarray(skimage.data.grass()[256:, 100:356])
    # Anti-aliased edges spill 1-2 px past the mask; a stain's Gaussian tails (cut at 2 %) about 30.
    halo = 30 if defect == "stain" else 2
    for seed in range(10):
        image, mask = defects.add_texture_defect(clean, defect, np.random.default_rng(seed))
        change = np.abs(image.astype(np.float32) - clean)
        assert mask.any() and mask.sum() < 0.1 * mask.size
        assert change[mask].mean() > 20  # the defect is visible where the mask is
        near = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=halo) > 0
        assert change[~near].max() == 0  # nothing changes away from the mask's edge
    with pytest.raises(ValueError, match="defect must be one of"):
        defects.add_texture_defect(clean, "dent", np.random.default_rng(0))


# --------------------------------------------------------------------------- the training set

def fake_synthesize(dest, src, config, rng):
    """Returns dest unchanged and src's first channel as the label (so tests can see both)."""
    return dest, src[:, :, 0].astype(np.float32) / 255


def _config(**changes):
    settings = dict(mode="quick", resize=96, crop=80, image_size=64, rotation=5.0, vflip=True)
    return get_config("widget", **{**settings, **changes})


@pytest.fixture
def noise_category(tmp_path):
    make_category(tmp_path, size=40, n_train=5)
    return layout.load_category(tmp_path, "widget")


def test_training_set_independent_of_workers(noise_category):
    dataset = training_set.SyntheticAnomalyDataset(noise_category, _config(), seed=3, synthesize=fake_synthesize)

    def epoch(workers):
        loader = DataLoader(dataset, batch_size=2, shuffle=False, num_workers=workers)
        return [torch.cat(part) for part in zip(*loader)]

    serial, parallel = epoch(0), epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
    image, label = serial
    assert image.shape == (5, 3, 64, 64) and label.shape == (5, 1, 64, 64)
    assert image.dtype == torch.float32 and label.dtype == torch.float32
    dataset.set_epoch(1)
    assert not torch.equal(epoch(0)[0], image)
    dataset.set_epoch(0)
    assert torch.equal(epoch(0)[0], image)
    other = training_set.SyntheticAnomalyDataset(noise_category, _config(), seed=4, synthesize=fake_synthesize)
    assert not torch.equal(torch.stack([other[i][0] for i in range(5)]), image)


def test_source_is_another_image(tmp_path):
    for k in range(4):  # constant images: the value tells which image a crop came from
        _write(tmp_path / "flat" / "train" / "good" / f"{k}.png", np.full((40, 40, 3), 50 * k + 10, np.uint8))
    _write(tmp_path / "flat" / "test" / "good" / "0.png", np.zeros((40, 40, 3), np.uint8))
    with pytest.warns(UserWarning):
        cat = layout.load_category(tmp_path, "flat")
    dataset = training_set.SyntheticAnomalyDataset(cat, _config(normalize="none"), synthesize=fake_synthesize)
    sources = set()
    for epoch in range(10):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            image, label = dataset[i]
            dest_value, src_value = round(image[0, 0, 0].item() * 255), round(label[0, 0, 0].item() * 255)
            assert dest_value == 50 * i + 10 and src_value != dest_value
            sources.add((i, src_value))
    assert len(sources) == 4 * 3  # every other image serves as a source sometime


def test_augment_is_a_crop_or_its_flip(noise_category):
    config = _config(rotation=0.0, crop=None)
    dataset = training_set.SyntheticAnomalyDataset(noise_category, config, synthesize=fake_synthesize)
    full, size, rng, flips = dataset.images[0], config.image_size, np.random.default_rng(0), set()
    assert full.shape == (config.resize, config.resize, 3)
    windows = {full[t:t + size, x:x + size].tobytes(): False for t in range(full.shape[0] - size + 1)
               for x in range(full.shape[1] - size + 1)}
    windows.update({full[t:t + size, x:x + size][::-1].tobytes(): True
                    for t in range(full.shape[0] - size + 1) for x in range(full.shape[1] - size + 1)})
    for _ in range(20):
        out = dataset.augment(full, rng)
        assert out.shape == (size, size, 3) and out.flags.c_contiguous
        flips.add(windows[out.tobytes()])
    assert flips == {False, True}


def test_training_set_needs_two_images(tmp_path):
    make_category(tmp_path, n_train=1)
    with pytest.raises(ValueError, match="at least 2 training images"):
        training_set.SyntheticAnomalyDataset(layout.load_category(tmp_path, "widget"), _config())


def test_training_set_with_real_synthesis(noise_category):
    dataset = training_set.SyntheticAnomalyDataset(noise_category, _config(), seed=0)
    image, label = dataset[0]
    assert image.shape == (3, 64, 64) and label.shape == (1, 64, 64)
    assert label.dtype == torch.float32 and 0 <= label.min() and label.max() <= 1


# --------------------------------------------------------------------------- chest X-rays

def _fake_nih(root: Path, n=160):
    rng = np.random.default_rng(11)
    rows = []
    for i in range(n):
        name = f"{i:08d}_000.png"
        rows.append({"Image Index": name,
                     "Finding Labels": rng.choice(["No Finding", "Effusion", "Mass|Nodule"], p=[0.6, 0.2, 0.2]),
                     "Follow-up #": "0", "Patient ID": str(i),
                     "Patient Age": rng.choice(["17", "18", "19", "45", "058Y", "70"]),
                     "Patient Gender": rng.choice(["M", "F"]), "View Position": rng.choice(["PA", "AP"])})
        folder = root / ("images_001" / Path("images") if i % 2 else Path("images_002"))
        _write(folder / name, np.full((20, 20), i % 256, np.uint8))
    with open(root / "Data_Entry_2017.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _expected(rows, code):
    keep = [r for r in rows if r["View Position"] == "PA" and r["Patient Gender"] == code
            and int(r["Patient Age"].rstrip("Y")) > 18]
    return ({r["Image Index"] for r in keep if r["Finding Labels"] == "No Finding"},
            {r["Image Index"] for r in keep if r["Finding Labels"] != "No Finding"})


def test_rcxr_filter_and_split(tmp_path):
    rows = _fake_nih(tmp_path / "nih")
    normal, abnormal = _expected(rows, "M")
    root = sources.prepare_rcxr(tmp_path / "nih", tmp_path / "out", "male", size=8)
    with pytest.warns(UserWarning, match="image-level"):
        cat = layout.load_category(root, "rcxr_male")
    names = lambda paths: {Path(p).name for p in paths}  # noqa: E731
    test_good = names(t.path for t in cat.test if t.label == 0)
    assert names(cat.train) | test_good == normal and not names(cat.train) & test_good
    assert names(t.path for t in cat.test if t.label == 1) == abnormal
    n_train, n_test, _ = sources.RCXR_PAPER_COUNTS["male"]
    assert len(test_good) == round(len(normal) * n_test / (n_train + n_test))
    assert layout.read_image(cat.train[0]).shape == (8, 8, 3)
    chosen = sorted(normal)[:6] + sorted(abnormal)[:2]
    (tmp_path / "list.txt").write_text("\n".join(chosen) + "\n")
    sources.prepare_rcxr(tmp_path / "nih", tmp_path / "out", "male", file_list=tmp_path / "list.txt", size=8)
    with pytest.warns(UserWarning):
        cat = layout.load_category(root, "rcxr_male")
    assert names(cat.train) | names(t.path for t in cat.test) == set(chosen)


def test_rcxr_errors(tmp_path):
    (tmp_path / "nih").mkdir()
    with pytest.raises(FileNotFoundError, match="Data_Entry_2017.csv"):
        sources.prepare_rcxr(tmp_path / "nih", tmp_path / "out", "female")
    (tmp_path / "nih" / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels\nx.png,No Finding\n")
    with pytest.raises(ValueError, match="Patient Age"):
        sources.prepare_rcxr(tmp_path / "nih", tmp_path / "out", "female")
    with pytest.raises(ValueError, match="gender"):
        sources.prepare_rcxr(tmp_path / "nih", tmp_path / "out", "M")


def test_one_rgb_rule_for_reading_synthesis_and_prediction(tmp_path, real_image):
    """layout.as_rgb is the one rule: grey repeated, alpha dropped, 2 or 5 channels refused with a
    ChannelsError, non-uint8 refused with a hint; read_image and synthesis follow it."""
    from nsa_tutorial.config import get_config
    from nsa_tutorial.layout import ChannelsError, as_rgb, read_image
    from nsa_tutorial.synthesis import make_anomaly

    rgb = real_image("coffee", 96)
    grey = real_image("camera", 96)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    assert (as_rgb(grey) == grey[:, :, None]).all() and as_rgb(grey).shape == (96, 96, 3)
    assert np.array_equal(as_rgb(rgba), rgb) and np.array_equal(as_rgb(grey[:, :, None]), as_rgb(grey))
    for channels in (2, 5):
        with pytest.raises(ChannelsError, match=f"{channels} channels cannot be brought"):
            as_rgb(np.zeros((8, 8, channels), np.uint8))
    with pytest.raises(ValueError, match="must be uint8.*float32"):
        as_rgb(np.zeros((8, 8, 3), np.float32))
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    assert np.array_equal(read_image(tmp_path / "a.png"), rgb)
    config = get_config("bottle", image_size=96)
    src = real_image("astronaut", 96)
    a = make_anomaly(rgba, src, config, np.random.default_rng(0))
    b = make_anomaly(rgb, src, config, np.random.default_rng(0))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
