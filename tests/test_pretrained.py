"""Shipped reference models: found offline in a checkout, downloaded and verified elsewhere, never
unpickled, refused when their checksum differs, and usable as ``--checkpoint pretrained:NAME``."""

import dataclasses
import functools
import http.server
import json
import pickle
import socket
import threading

import numpy as np
import pytest
import torch

from nsa_tutorial import pretrained as shipped
from nsa_tutorial.cli import main
from nsa_tutorial.config import get_config
from nsa_tutorial.model import build_model
from nsa_tutorial.checkpoint import load_calibration, load_model
from nsa_tutorial.calibration import calibrate
from nsa_tutorial.inference import torch_predictor
from nsa_tutorial.layout import load_category
from nsa_tutorial.sources import resolve_data_root

NAME = "tiny-texture"


@pytest.fixture
def release(tmp_path, monkeypatch):
    """A manifest with one model whose weights lie in a checkout folder; downloads go to a cache."""
    config = get_config("texture_brick", image_size=64, mode="quick")
    torch.manual_seed(0)
    model = build_model(config).eval()
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    digest = shipped.save_weights(model, checkout / f"{NAME}.safetensors")
    normal = load_category(resolve_data_root("textures"), "texture_brick").train[:5]
    calibration = calibrate(torch_predictor(model, config), normal, 0.01)
    manifest = tmp_path / "pretrained.json"
    manifest.write_text(json.dumps({"models": {NAME: {
        "file": f"{NAME}.safetensors", "sha256": digest, "config": dataclasses.asdict(config),
        "calibration": calibration}}}))
    monkeypatch.setattr(shipped, "MANIFEST", manifest)
    monkeypatch.setattr(shipped, "CHECKOUT_WEIGHTS", checkout)
    monkeypatch.setattr(shipped, "_cache", lambda: tmp_path / "cache" / "weights")
    monkeypatch.delenv("NSA_WEIGHTS_DIR", raising=False)
    return model, config, checkout / f"{NAME}.safetensors", calibration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(folder):
    """A loopback HTTP server for ``folder``; returns (server, base URL)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_a_checkout_loads_offline_the_weights_it_ships(release, monkeypatch):
    model, config, _, calibration = release
    monkeypatch.setattr(shipped, "RELEASE_URL", f"http://127.0.0.1:{_closed_port()}/{{file}}")  # no network
    reference = shipped.pretrained(NAME)
    assert reference.config == config and reference.calibration == calibration
    for key, value in model.state_dict().items():  # float16 on disk, float32 in memory
        loaded = reference.model.state_dict()[key]
        assert loaded.dtype == value.dtype
        if value.is_floating_point():
            torch.testing.assert_close(loaded, value, atol=2e-3, rtol=1e-3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (reference.model(x) - model(x)).abs().max() < 1e-2


def test_loading_never_unpickles(release, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert shipped.pretrained(NAME).model is not None


def test_a_file_whose_checksum_differs_is_refused(release):
    _, _, path, _ = release
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one weight changed, the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 .* refusing to load it"):
        shipped.pretrained(NAME)


def test_without_the_file_and_without_network_one_line_says_what_to_do(release, monkeypatch, capsys):
    _, _, path, _ = release
    path.unlink()
    monkeypatch.setattr(shipped, "RELEASE_URL", f"http://127.0.0.1:{_closed_port()}/{{file}}")
    with pytest.raises(OSError) as error:
        shipped.pretrained(NAME)
    message = str(error.value)
    assert "\n" not in message and "could not be downloaded" in message and "NSA_WEIGHTS_DIR" in message
    code = main(["export", "--checkpoint", f"pretrained:{NAME}", "--output", "x.onnx"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "could not be downloaded" in err


def test_an_installed_package_downloads_verifies_and_caches_the_file(release, tmp_path, monkeypatch):
    model, _, path, _ = release
    served = tmp_path / "release"
    served.mkdir()
    path.rename(served / path.name)
    server, url = _serve(served)
    try:
        monkeypatch.setattr(shipped, "RELEASE_URL", url + "/{file}")
        first = shipped.pretrained(NAME)
        cached = tmp_path / "cache" / "weights" / path.name
        assert cached.is_file() and shipped.sha256(cached) == shipped.entry(NAME)["sha256"]
        server.shutdown()  # the second load needs no network
        second = shipped.pretrained(NAME)
        for key, value in first.model.state_dict().items():
            assert torch.equal(value, second.model.state_dict()[key])
    finally:
        server.server_close()


def test_a_download_with_another_checksum_is_refused_and_not_kept(release, tmp_path, monkeypatch):
    _, _, path, _ = release
    served = tmp_path / "release"
    served.mkdir()
    (served / path.name).write_bytes(path.read_bytes()[:-1] + b"\0")
    path.unlink()
    server, url = _serve(served)
    try:
        monkeypatch.setattr(shipped, "RELEASE_URL", url + "/{file}")
        with pytest.raises(OSError, match="could not be downloaded"):
            shipped.pretrained(NAME)
        assert not (tmp_path / "cache" / "weights" / path.name).exists()
    finally:
        server.shutdown()
        server.server_close()


def test_pretrained_name_works_where_a_model_file_does(release, tmp_path, capsys):
    model, config, _, calibration = release
    net, loaded_config = load_model(f"pretrained:{NAME}")
    assert loaded_config == config and load_calibration(f"pretrained:{NAME}") == calibration
    assert main(["evaluate", "--data-root", "textures", "--category", "texture_brick", "--checkpoint",
                 f"pretrained:{NAME}", "--output", str(tmp_path / "m.json")]) == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["image_threshold"] == calibration["image_threshold"] and 0 <= result["image_auroc"] <= 1
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert main(["predict", "--checkpoint", f"pretrained:{NAME}", str(tmp_path / "a.png"),
                 "--output", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred").is_dir()
    capsys.readouterr()
    assert main(["evaluate", "--data-root", "textures", "--category", "texture_brick", "--checkpoint",
                 "pretrained:no-such-model", "--output", str(tmp_path / "n.json")]) == 2
    err = capsys.readouterr().err
    assert "no pretrained model 'no-such-model'" in err and NAME in err


def test_every_model_in_the_manifest_ships_with_this_checkout_and_verifies():
    for name, info in shipped.manifest().items():
        path = shipped.CHECKOUT_WEIGHTS / info["file"]
        assert path.is_file(), f"{name}: {path} is missing from the checkout"
        assert shipped.sha256(path) == info["sha256"], f"{name}: {path} does not match the manifest"
    total = sum(p.stat().st_size for p in shipped.CHECKOUT_WEIGHTS.glob("*.safetensors"))
    assert total <= 80e6, f"weights/ holds {total / 1e6:.1f} MB, more than the 80 MB budget"


def test_nsa_weights_url_points_the_download_at_a_mirror(release, tmp_path, monkeypatch):
    _, _, path, _ = release
    served = tmp_path / "mirror"
    served.mkdir()
    path.rename(served / path.name)
    server, url = _serve(served)
    try:
        monkeypatch.setattr(shipped, "RELEASE_URL", f"http://127.0.0.1:{_closed_port()}/{{file}}")
        monkeypatch.setenv("NSA_WEIGHTS_URL", url + "/{file}")
        assert shipped.pretrained(NAME).model is not None
    finally:
        server.shutdown()
        server.server_close()


def test_reference_name_finds_the_model_of_a_dataset_and_says_what_is_shipped():
    models = shipped.manifest()
    for name, info in models.items():
        assert shipped.reference_name(info["data_root"], info["category"], info["config"]["method"]) == name
        assert shipped.reference_name(f"/somewhere/{info['data_root']}", info["category"],
                                      info["config"]["method"]) == name  # a folder named like the dataset
    with pytest.raises(ValueError, match=r"no reference model of elpv/poly \(nsa\).*MODEL = 'train'") as error:
        shipped.reference_name("elpv", "poly")
    assert "\n" not in str(error.value) and "textures/texture_brick (nsa)" in str(error.value)
