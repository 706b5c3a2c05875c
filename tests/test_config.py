"""Tests for nsa_tutorial.config: paper Table 4, Sec. 4.1 schedules and validation."""

import re
from fractions import Fraction
from pathlib import Path

import pytest

from nsa_tutorial import config as C
from nsa_tutorial.config import get_config

SEED_TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "seeds" / "000_d6b4d1439b5f6d13.txt"
TABLE4_NAMES = {"metal nut": "metal_nut", "male": "rcxr_male", "female": "rcxr_female"}
GROUPS = {"object": "object", "texture": "texture", "rCXR": "xray"}


def _seed_text() -> str:
    if not SEED_TEXT.is_file():
        pytest.skip(f"paper text not found at {SEED_TEXT} (shared/ must sit beside the repository)")
    return SEED_TEXT.read_text(encoding="utf-8")


def _pair(cell: str):
    lo, hi = (float(v) for v in cell.split(","))
    return lo, hi


def _number(cell: str):
    return None if cell == "N/A" else float(cell)


def parse_table4() -> dict:
    """The rows of Table 4 as ``{class: (group, fields)}``, read from the paper text."""
    lines = _seed_text().split("Table 4:")[1].splitlines()
    rows, group = {}, None
    for line in lines[1:]:
        cells = [c.strip() for c in line.split("\t") if c.strip()]
        if rows and not cells:
            break
        group = next((GROUPS[c] for c in cells if c in GROUPS), group)
        first_int = next((i for i, c in enumerate(cells) if c.isdigit()), None)
        if first_int is None:
            continue
        name = cells[first_int - 1]
        n_max, h, w, b, tb, to, tv, s, logistic = cells[first_int:first_int + 9]
        y0, k = logistic.split()
        rows[TABLE4_NAMES.get(name, name)] = (group, dict(
            n_max=int(n_max), h=_pair(h), w=_pair(w), background=_number(b), t_brightness=_number(tb),
            t_object=_number(to), t_overlap=_number(tv), s=_pair(s), y0=float(y0), k=float(Fraction(k))))
    return rows


def test_table4_parsed_from_paper_covers_all_classes():
    rows = parse_table4()
    assert set(rows) == set(C.MVTEC_CLASSES) | set(C.XRAY)
    assert {name for name, (group, _) in rows.items() if group == "texture"} == set(C.TEXTURES)
    assert {name for name, (group, _) in rows.items() if group == "object"} == set(C.OBJECTS)


@pytest.mark.parametrize("name", C.MVTEC_CLASSES + C.XRAY)
def test_config_matches_paper_table4(name):
    group, row = parse_table4()[name]
    c = get_config(name)
    assert c.kind == group
    assert c.n_max == row["n_max"]
    assert (c.h_min, c.h_max) == pytest.approx(row["h"])  # Table 4 lists h before w
    assert (c.w_min, c.w_max) == pytest.approx(row["w"])
    for field in ("background", "t_brightness", "t_object", "t_overlap"):
        assert getattr(c, field) == (None if row[field] is None else pytest.approx(row[field])), field
    assert c.has_background_constraints == (row["t_object"] is not None)
    assert (c.s_min, c.s_max) == pytest.approx(row["s"])
    assert c.y0 == pytest.approx(row["y0"])
    assert c.k == pytest.approx(row["k"])


@pytest.mark.parametrize("name", C.MVTEC_CLASSES + C.XRAY)
def test_blend_mode_follows_appendix(name):
    """App. A.1: source gradients for MVTec object classes, mixed for textures and all rCXR data."""
    group, _ = parse_table4()[name]
    assert get_config(name).blend == ("normal" if group == "object" else "mixed")


def test_epochs_from_paper_text():
    """Sec. 4.1: 320 epochs; 560 for hazelnut, metal nut and screw; 240 for rCXR."""
    text = " ".join(_seed_text().split())
    default = int(re.search(r"over (\d+) epochs", text).group(1))
    long_match = re.search(r"we use (\d+) epochs for the ([a-z ,]+) classes", text)
    long_classes = {TABLE4_NAMES.get(n.strip(), n.strip())
                    for n in re.split(r",\s*(?:and\s+)?|\s+and\s+", long_match.group(2)) if n.strip()}
    xray = int(re.search(r"For rCXR, we use (\d+) epochs", text).group(1))
    assert long_classes == {"hazelnut", "metal_nut", "screw"}
    for name in C.MVTEC_CLASSES + C.XRAY:
        expected = xray if name in C.XRAY else int(long_match.group(1)) if name in long_classes else default
        assert get_config(name).epochs == expected, name


@pytest.mark.parametrize("name", C.MVTEC_CLASSES + C.XRAY)
def test_augmentation_per_kind(name):
    """The authors' augmentation: rotation for unaligned objects and X-rays, flips and sizes for textures."""
    c = get_config(name)
    unaligned = {"bottle", "hazelnut", "metal_nut", "screw"}
    assert c.rotation == (5.0 if name in unaligned else 3.0 if c.kind == "xray" else 0.0)
    assert c.vflip == (c.kind == "texture")
    assert c.normalize == ("none" if c.kind == "xray" else "imagenet")
    if c.kind == "texture":
        assert (c.resize, c.crop, c.image_size) == (264, None, 256)
    else:
        assert (c.resize, c.crop, c.image_size) == (256, 230, 224)
    assert (c.batch_size, c.lr, c.lr_min) == (64, 1e-3, 1e-6)


@pytest.mark.parametrize("name", C.MVTEC_CLASSES + C.XRAY + ("my_parts", "texture_solar"))
def test_quick_mode_keeps_ratios_and_multiple_of_32(name):
    full, quick = get_config(name), get_config(name, mode="quick")
    assert quick.image_size % 32 == 0 and quick.image_size < full.image_size
    assert quick.epochs < full.epochs and quick.batch_size < full.batch_size
    scale = quick.image_size / full.image_size
    assert abs(quick.resize - full.resize * scale) <= 0.5
    if full.crop is None:
        assert quick.crop is None
    else:
        assert abs(quick.crop - full.crop * scale) <= 0.5
        assert quick.image_size <= quick.crop <= quick.resize
    # synthesis settings do not depend on the mode
    for field in ("n_max", "h_min", "h_max", "w_min", "w_max", "t_object", "s_min", "s_max", "y0", "k", "blend"):
        assert getattr(quick, field) == getattr(full, field), field


@pytest.mark.parametrize("size", [64, 96, 160, 320])
def test_explicit_image_size_scales_augmentation(size):
    for name in ("bottle", "carpet"):
        full, c = get_config(name), get_config(name, image_size=size)
        assert c.image_size == size
        assert abs(c.resize - full.resize * size / full.image_size) <= 0.5


def test_unknown_names_get_default_settings():
    """A user's own data: DEFAULT_SETTINGS with OWN_DATA_KIND's blending and augmentation;
    the embedded solar cells are objects by name (aligned cells keep the object settings)."""
    n_max, (h_min, h_max), (w_min, w_max), bg, (s_min, s_max), y0, k = C.DEFAULT_SETTINGS
    for name, kind in (("my_widgets", C.OWN_DATA_KIND), ("texture_solar", "texture"), ("mono", "object"),
                       ("my_widgets_as_objects", None)):
        c = get_config(name, kind="object" if kind is None else None)
        assert c.kind == (kind or "object")
        assert (c.h_min, c.h_max, c.w_min, c.w_max) == (h_min, h_max, w_min, w_max)
        assert (c.background, c.t_brightness, c.t_object, c.t_overlap) == bg
        assert not c.has_background_constraints
        assert (c.y0, c.k) == (y0, k)
    objects = get_config("my_widgets", kind="object")
    assert (objects.s_min, objects.s_max, objects.n_max, objects.blend) == (s_min, s_max, n_max, "normal")
    assert get_config("mono") == get_config("mono", kind="object")
    carpet, texture = get_config("carpet"), get_config("texture_solar")
    assert (texture.s_min, texture.s_max, texture.blend) == (carpet.s_min, carpet.s_max, carpet.blend)
    assert texture.n_max == carpet.n_max  # textures: 4 patches
    assert get_config("my_xrays", kind="xray").blend == "mixed"


def test_embedded_objects_are_the_elpv_categories():
    from nsa_tutorial.sources import ELPV_CATEGORIES

    assert C.EMBEDDED_OBJECTS == ELPV_CATEGORIES


@pytest.mark.parametrize("like", ["bottle", "screw", "carpet"])
def test_like_borrows_every_setting_but_the_name_the_centre_crop_and_the_score(like):
    for mode in ("full", "quick"):
        own = get_config("my_data", like=like, mode=mode, size_clip="reference")
        theirs = get_config(like, mode=mode, size_clip="reference")
        if theirs.crop is not None:  # own data is trained and scored whole: resized to the crop size
            theirs = theirs.replace(resize=theirs.crop, crop=None)
        assert own == theirs.replace(name="my_data", score=C.OWN_DATA_SCORE)
    with pytest.raises(ValueError, match="like must be an MVTec AD class"):
        get_config("my_data", like="rcxr_male")
    with pytest.raises(ValueError, match="give kind or like, not both"):
        get_config("my_data", like=like, kind="object")


def test_describe_names_the_settings():
    text = C.describe(get_config("my_data", like="bottle", mode="quick"))
    for part in ("'my_data' (own data)", "kind object", "n_max 3", "blending normal", "rotation 5 deg",
                 "b 200", "size_clip"):
        assert part in text


def test_variants_and_losses():
    assert get_config("bottle", variant="B").n_max == 1
    assert not get_config("bottle", variant="A").has_background_constraints
    assert get_config("bottle", variant="D").has_background_constraints
    assert get_config("bottle", label="continuous").loss == "mse"
    for method, label in (("nsa", "logistic"), ("nsa", "binary"), ("fpi", "continuous"), ("pii", "logistic"),
                          ("cutpaste", "binary")):
        assert get_config("bottle", method=method, label=label).loss == "bce"


def test_variant_c_uses_a_single_patch():
    """App. B.1, variant C: "Use single patch, uniform distributions, no foreground constraints"."""
    assert get_config("zipper", variant="C").n_max == 1


def test_config_is_frozen_and_replace_validates():
    c = get_config("bottle")
    with pytest.raises(AttributeError):
        c.n_max = 5
    assert c.replace(n_max=5).n_max == 5 and c.n_max == 3
    with pytest.raises(ValueError, match="n_max"):
        c.replace(n_max=0)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(h_min=0.5, h_max=0.2), r"h_min and h_max must satisfy 0 < h_min <= h_max <= 1, got 0.5, 0.2"),
    (dict(w_min=0.0), r"w_min and w_max must satisfy 0 < w_min"),
    (dict(w_max=1.5), r"w_max <= 1, got 0.06, 1.5"),
    (dict(s_min=1.5, s_max=1.0), r"s_min and s_max must satisfy 0 < s_min <= s_max, got 1.5, 1.0"),
    (dict(t_object=1.0), r"t_object must be in \[0, 1\), got 1.0"),
    (dict(t_overlap=-0.1), r"t_overlap must be in \[0, 1\), got -0.1"),
    (dict(background=300), r"background b must be in \[0, 255\], got 300"),
    (dict(t_brightness=-1), r"t_brightness must be in \[0, 255\], got -1"),
    (dict(t_object=None), r"background, t_brightness, t_object and t_overlap must be all set or all None"),
    (dict(k=0.0), r"k \(logistic steepness\) must be > 0"),
    (dict(image_size=100), r"image_size must be a positive multiple of 32.*got 100"),
    (dict(max_tries=0), r"max_tries must be >= 1"),
    (dict(blend="poisson"), r"blend must be one of \('normal', 'mixed'\), got 'poisson'"),
    (dict(method="draem"), r"method must be one of .*'nsa'.*got 'draem'"),
    (dict(label="soft"), r"label must be one of .*'logistic'.*got 'soft'"),
    (dict(variant="E"), r"variant must be one of .*got 'E'"),
    (dict(mode="slow"), r"mode must be one of .*got 'slow'"),
    (dict(kind="video"), r"kind must be 'object', 'texture' or 'xray', got 'video'"),
    (dict(size_clip="half"), r"size_clip must be one of \('paper', 'reference'\), got 'half'"),
])
def test_invalid_configs_raise_helpful_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        get_config("bottle", **kwargs)


def test_partial_background_constraints_on_unconstrained_class():
    with pytest.raises(ValueError, match="all set or all None"):
        get_config("carpet", background=20)


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_bad_class_names(name):
    with pytest.raises(ValueError, match="class name must be a non-empty string"):
        get_config(name)


@pytest.mark.parametrize("field", ["epochs", "batch_size"])
def test_config_names_the_field_that_is_out_of_range(field):
    with pytest.raises(ValueError, match=f"^{field} must be an integer >= 1, got 0$"):
        get_config("bottle", **{field: 0})


def test_the_papers_classes_keep_the_mean_and_own_data_gets_the_measured_score():
    """The paper's classes (MVTec AD, rCXR) are scored as in Table 1; own data, the embedded data
    and a class borrowed with like= get OWN_DATA_SCORE, the choice recorded by score_choice.py."""
    import json
    from pathlib import Path

    from nsa_tutorial.config import OWN_DATA_SCORE

    recorded = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "score-choice-cpu.json").read_text())
    assert OWN_DATA_SCORE == recorded["choice"]["default"]
    for name in ("bottle", "carpet", "rcxr_male"):
        assert get_config(name).score == "mean"
    for name, extra in (("tiles", {}), ("mono", {}), ("texture_brick", {}), ("parts", {"like": "screw"})):
        assert get_config(name, **extra).score == OWN_DATA_SCORE
    assert get_config("parts", like="screw", score="max").score == "max"
    assert get_config("bottle", score="top5%").score == "top5%"
    with pytest.raises(ValueError, match="score must be 'mean', 'max' or 'topP%'"):
        get_config("bottle", score="median")
