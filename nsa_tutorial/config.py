"""Per-class settings of NSA (paper Table 4) and the quick/full modes.

Book chapter: *Synthetic anomalies* (the Table 4 page is generated from ``TABLE4``).

One flat, frozen :class:`Config` holds everything a run needs: the synthesis
hyperparameters of Table 4, the method and label type, the augmentation and the
training schedule.  ``get_config(name)`` builds a validated one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
           "toothbrush", "transistor", "zipper")
TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_CLASSES = OBJECTS + TEXTURES
XRAY = ("rcxr_male", "rcxr_female")
#: Anomaly synthesis methods: NSA and the baselines of the paper's Table 1 (``synthesis.METHOD_STEPS``).
METHODS = ("nsa", "cutpaste", "fpi", "pii")
#: Label kinds, eq. 13-14 (:mod:`nsa_tutorial.labels`).
LABELS = ("binary", "continuous", "logistic")
#: Poisson guidance fields, eq. 3-4 (:mod:`nsa_tutorial.poisson`).
BLEND_MODES = ("normal", "mixed")
#: Ablation variants of the paper's Table 3 (``None``: full NSA).
VARIANTS = (None, "A", "B", "C", "D")
#: Run modes (see :func:`default_mode`).
MODES = ("quick", "full")
#: The paper's augmentation sizes for objects (Sec. 4.1): resize, centre crop, random crop (input).
RESIZE, CROP, IMAGE_SIZE = 256, 230, 224
#: Eq. 9's clip after resizing: "paper" clips the resized sides to Table 4's bounds, as the
#: paper's text says; "reference" is the authors' code, which clips the full sides to the
#: half-width bounds (w_min/2 ... w_max/2) and floors half-widths to whole pixels.
SIZE_CLIPS = ("paper", "reference")

# Paper Table 4, column for column:
# n_max, (h_min, h_max), (w_min, w_max), b, t_brightness, t_object, t_overlap,
# (s_min, s_max), y0, k.  ``None`` = no background constraints ("N/A" in the paper).
_NO_BG = (None, None, None, None)
TABLE4 = {
    "bottle":      (3, (0.06, 0.80), (0.06, 0.80), (200, 60, 0.70, 0.25), (0.7, 1.3), 24, 1 / 12),
    "cable":       (3, (0.10, 0.80), (0.10, 0.80), _NO_BG, (0.7, 1.3), 24, 1 / 12),
    "capsule":     (3, (0.06, 0.30), (0.06, 0.80), (200, 60, 0.70, 0.25), (0.7, 1.3), 4, 1 / 2),
    "hazelnut":    (3, (0.06, 0.70), (0.06, 0.70), (20, 20, 0.70, 0.25), (0.7, 1.3), 24, 1 / 12),
    "metal_nut":   (3, (0.06, 0.80), (0.06, 0.80), (20, 20, 0.50, 0.25), (0.7, 1.3), 7, 1 / 3),
    "pill":        (3, (0.06, 0.40), (0.06, 0.80), (20, 20, 0.70, 0.25), (0.7, 1.3), 7, 1 / 3),
    "screw":       (4, (0.06, 0.24), (0.06, 0.24), (200, 60, 0.50, 0.25), (0.7, 1.3), 3, 1),
    "toothbrush":  (3, (0.06, 0.80), (0.06, 0.40), (20, 20, 0.25, 0.25), (0.7, 1.3), 15, 1 / 6),
    "transistor":  (3, (0.06, 0.80), (0.06, 0.80), _NO_BG, (0.7, 1.3), 15, 1 / 6),
    "zipper":      (4, (0.06, 0.80), (0.06, 0.40), (200, 60, 0.70, 0.25), (0.7, 1.3), 15, 1 / 6),
    "carpet":      (4, (0.06, 0.80), (0.06, 0.80), _NO_BG, (0.5, 2.0), 7, 1 / 3),
    "grid":        (4, (0.06, 0.80), (0.06, 0.80), _NO_BG, (0.5, 2.0), 7, 1 / 3),
    "leather":     (4, (0.06, 0.80), (0.06, 0.80), _NO_BG, (0.5, 2.0), 7, 1 / 3),
    "tile":        (4, (0.06, 0.80), (0.06, 0.80), _NO_BG, (0.5, 2.0), 7, 1 / 3),
    "wood":        (4, (0.06, 0.80), (0.06, 0.80), _NO_BG, (0.5, 2.0), 15, 1 / 6),
    "rcxr_male":   (3, (0.06, 0.80), (0.06, 0.80), (0, 20, 0.70, 0.70), (0.7, 1.3), 4, 1 / 2),
    "rcxr_female": (3, (0.06, 0.80), (0.06, 0.80), (0, 20, 0.70, 0.70), (0.7, 1.3), 4, 1 / 2),
}
#: Settings for data that is not in Table 4 (a user's own images, the embedded
#: solar cells and textures): no background constraints, the objects' scale range
#: (textures get the textures' range and four patches, see ``get_config``) and the
#: moderate logistic curve the paper uses for most textures.
DEFAULT_SETTINGS = (3, (0.06, 0.80), (0.06, 0.80), _NO_BG, (0.7, 1.3), 7, 1 / 3)

#: The embedded elpv solar cells (``sources.ELPV_CATEGORIES``): aligned objects, so they keep the
#: object settings explicitly, whatever a user's own data gets by default.
EMBEDDED_OBJECTS = ("mono", "poly")
#: The kind a user's own data (a name not in Table 4, not embedded, not ``texture_*``) gets
#: when neither ``kind`` nor ``like`` is given.  Chosen by measurement on the embedded data
#: (``benchmarks/ab_size_clip.py``, results in ``benchmarks/results/ab-size-clip-cpu.json``).
OWN_DATA_KIND = "texture"
#: Eq. 9's clip (``SIZE_CLIPS``) for the paper's classes: the authors' rule, which made the
#: paper's numbers, so ``reproduce`` compares like with like.
REPRODUCE_SIZE_CLIP = "reference"
#: Eq. 9's clip for other data: the paper's text (better in the CPU A/B on the embedded data,
#: where there is no number to reproduce).  ``Config``'s own default is "paper" too.
OWN_DATA_SIZE_CLIP = "paper"
#: The image score of a user's own data (the paper's classes keep the paper's mean): the mean
#: of the top 1 % of the map's pixels, chosen by a rule fixed before measuring
#: (``benchmarks/score_choice.py``, results in ``benchmarks/results/score-choice-cpu.json``):
#: over the embedded textures and solar cells, it beat the mean by more than its standard error.
OWN_DATA_SCORE = "top1%"

#: Resize of a user's own images with object settings, before the random ``IMAGE_SIZE`` crop:
#: the paper's objects are resized to 256, centre-cropped to 230 and random-cropped to 224, so
#: training never sees a 5 % border that evaluation (zero-padded centre crop) never scores.
#: Own data is scored whole (no part of a user's image silently dropped), so it is trained whole:
#: resized to 230 (the paper's centre-crop size) and random-cropped to 224, a small scale change
#: like the textures' 264/256.
OWN_DATA_RESIZE = CROP
#: Classes the authors train for 560 epochs instead of 320.
LONG_TRAINING = ("hazelnut", "metal_nut", "screw")
#: Unaligned classes: their augmentation adds a random rotation of up to 5 degrees.
UNALIGNED = ("bottle", "hazelnut", "metal_nut", "screw")


@dataclass(frozen=True)
class Config:
    """Everything one training run needs. Build it with :func:`get_config`.

    Synthesis fields use the paper's names (Table 4, eq. 5-14); sizes are
    fractions of the image side, brightness values are on the 0-255 scale.
    """

    name: str
    kind: str  # "object", "texture" or "xray"
    # --- synthesis (Table 4) ---
    n_max: int
    h_min: float
    h_max: float
    w_min: float
    w_max: float
    background: Optional[float]  # b
    t_brightness: Optional[float]
    t_object: Optional[float]
    t_overlap: Optional[float]
    s_min: float
    s_max: float
    y0: float
    k: float
    blend: str  # "normal" (source gradients, eq. 3) or "mixed" (eq. 4)
    method: str = "nsa"
    label: str = "logistic"
    variant: Optional[str] = None  # Table 7 ablations A-D
    max_tries: int = 200
    size_clip: str = "paper"  # eq. 9's clip after resizing, see SIZE_CLIPS
    # --- data and augmentation (paper Sec. 4.1) ---
    resize: int = RESIZE
    crop: Optional[int] = CROP  # centre crop before the random crop (objects)
    image_size: int = IMAGE_SIZE
    rotation: float = 0.0
    vflip: bool = False
    normalize: str = "imagenet"  # or "none" (chest X-rays)
    # --- scoring: an image's score from its anomaly map (nsa_tutorial.metrics.image_scores) ---
    score: str = "mean"  # the paper's (Table 1); or "max", or "topP%" (the mean of the top P % of pixels)
    # --- training (paper Sec. 4.1) ---
    epochs: int = 320
    batch_size: int = 64
    lr: float = 1e-3
    lr_min: float = 1e-6
    mode: str = "full"

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def has_background_constraints(self) -> bool:
        """True when eq. 8, 11 and 12 apply (Table 4 gives values; off in ablations A and C)."""
        return self.t_object is not None and self.variant not in ("A", "C")

    @property
    def loss(self) -> str:
        """``"mse"`` for unbounded continuous labels (eq. 16), else ``"bce"`` (eq. 15)."""
        return "mse" if (self.method == "nsa" and self.label == "continuous") else "bce"

    def replace(self, **changes) -> "Config":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _validate(c: Config) -> None:
    _check(c.kind in ("object", "texture", "xray"),
           f"kind must be 'object', 'texture' or 'xray', got {c.kind!r}")
    _check(c.method in METHODS, f"method must be one of {METHODS}, got {c.method!r}")
    _check(c.label in LABELS, f"label must be one of {LABELS}, got {c.label!r}")
    _check(c.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {c.variant!r}")
    _check(c.blend in BLEND_MODES, f"blend must be one of {BLEND_MODES}, got {c.blend!r}")
    _check(c.mode in MODES, f"mode must be one of {MODES}, got {c.mode!r}")
    _check(isinstance(c.n_max, int) and c.n_max >= 1, f"n_max must be an integer >= 1, got {c.n_max!r}")
    for axis in ("h", "w"):
        lo, hi = getattr(c, f"{axis}_min"), getattr(c, f"{axis}_max")
        _check(0 < lo <= hi <= 1,
               f"{axis}_min and {axis}_max must satisfy 0 < {axis}_min <= {axis}_max <= 1, got {lo}, {hi}")
    _check(0 < c.s_min <= c.s_max, f"s_min and s_max must satisfy 0 < s_min <= s_max, got {c.s_min}, {c.s_max}")
    _check(c.k > 0, f"k (logistic steepness) must be > 0, got {c.k}")
    bg = (c.background, c.t_brightness, c.t_object, c.t_overlap)
    _check(all(v is None for v in bg) or all(v is not None for v in bg),
           "background, t_brightness, t_object and t_overlap must be all set or all None, got "
           f"{bg}")
    if c.t_object is not None:
        _check(0 <= c.background <= 255, f"background b must be in [0, 255], got {c.background}")
        _check(0 <= c.t_brightness <= 255, f"t_brightness must be in [0, 255], got {c.t_brightness}")
        _check(0 <= c.t_object < 1, f"t_object must be in [0, 1), got {c.t_object}")
        _check(0 <= c.t_overlap < 1, f"t_overlap must be in [0, 1), got {c.t_overlap}")
    _check(c.size_clip in SIZE_CLIPS, f"size_clip must be one of {SIZE_CLIPS}, got {c.size_clip!r}")
    _check(c.max_tries >= 1, f"max_tries must be >= 1, got {c.max_tries}")
    _check(c.image_size % 32 == 0 and c.image_size >= 32,
           f"image_size must be a positive multiple of 32 (the encoder's stride), got {c.image_size}")
    _check(c.resize >= c.image_size, f"resize ({c.resize}) must be >= image_size ({c.image_size})")
    if c.crop is not None:
        _check(c.image_size <= c.crop <= c.resize,
               f"crop must lie between image_size and resize, got {c.crop}")
    _check(c.normalize in ("imagenet", "none"), f"normalize must be 'imagenet' or 'none', got {c.normalize!r}")
    from .metrics import top_fraction

    top_fraction(c.score)  # 'mean', 'max' or 'topP%', else a ValueError that says so
    for field in ("epochs", "batch_size"):
        value = getattr(c, field)
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
               f"{field} must be an integer >= 1, got {value!r}")
    _check(0 < c.lr_min <= c.lr, f"need 0 < lr_min <= lr, got {c.lr_min}, {c.lr}")


def _kind(name: str) -> str:
    if name in TEXTURES or name.startswith("texture_"):
        return "texture"
    if name in XRAY:
        return "xray"
    if name in OBJECTS or name in EMBEDDED_OBJECTS:
        return "object"
    return OWN_DATA_KIND


def default_mode(requested: Optional[str] = None) -> str:
    """The run mode: ``requested`` if it is "quick" or "full", else ``$NSA_MODE`` if set,
    else "full" on a CUDA machine and "quick" elsewhere (never hours of training on a CPU
    by accident)."""
    for mode in (requested, os.environ.get("NSA_MODE")):
        if mode and mode != "auto":
            _check(mode in MODES, f"mode must be 'quick', 'full' or 'auto', got {mode!r}")
            return mode
    import torch

    return "full" if torch.cuda.is_available() else "quick"


def _scaled_sizes(fields: dict, image_size: int) -> dict:
    """Resize and crop sizes scaled with the input size, keeping the paper's ratios."""
    scale = image_size / fields.get("image_size", IMAGE_SIZE)
    crop = fields.get("crop", CROP)
    return dict(image_size=image_size, resize=round(fields.get("resize", RESIZE) * scale),
                crop=None if crop is None else round(crop * scale))


def get_config(name: str, *, method: str = "nsa", label: str = "logistic",
               variant: Optional[str] = None, mode: str = "full",
               kind: Optional[str] = None, image_size: Optional[int] = None,
               like: Optional[str] = None, **overrides) -> Config:
    """The validated config for a class.

    ``name`` is an MVTec AD class (``"bottle"``), ``"rcxr_male"``/``"rcxr_female"``,
    or any other name (your own data, the embedded datasets), which gets
    :data:`DEFAULT_SETTINGS` and ``kind`` (default :data:`OWN_DATA_KIND`; names
    starting with ``texture_`` are textures, the embedded solar cells objects).
    ``like="carpet"`` gives a class every setting of that MVTec AD class instead (Table 4,
    blending mode, augmentation, epochs, size_clip); only the name stays, and own data never
    gets the objects' centre crop: it is trained on random crops of the image resized to
    :data:`OWN_DATA_RESIZE` and scored whole.  ``size_clip``
    defaults to :data:`REPRODUCE_SIZE_CLIP` for the paper's classes and to
    :data:`OWN_DATA_SIZE_CLIP` for other data, ``score`` to the paper's mean for the paper's
    classes and to :data:`OWN_DATA_SCORE` for other data.  ``mode="quick"`` shrinks images to 128 px,
    batches to 16 and training to 10 epochs so that a laptop CPU runs it.
    ``image_size`` changes the model's input size and scales the resize and
    crop sizes of the paper's augmentation with it (256/224 and 230/224 for
    objects, 264/256 for textures).

    >>> get_config("bottle").blend, get_config("carpet").blend
    ('normal', 'mixed')
    """
    _check(isinstance(name, str) and name.strip() != "", f"class name must be a non-empty string, got {name!r}")
    _check(mode in MODES, f"mode must be one of {MODES}, got {mode!r}")
    if like is not None:
        return _borrowed(name, like, kind, dict(method=method, label=label, variant=variant, mode=mode,
                                                image_size=image_size, **overrides))
    kind = kind or _kind(name)
    n_max, (h_min, h_max), (w_min, w_max), (b, tb, tobj, tov), (s_min, s_max), y0, k = \
        TABLE4.get(name, DEFAULT_SETTINGS)
    if name not in TABLE4 and kind == "texture":  # as the paper's texture classes
        n_max, (s_min, s_max) = 4, (0.5, 2.0)
    fields = dict(
        name=name, kind=kind, n_max=n_max, h_min=h_min, h_max=h_max, w_min=w_min, w_max=w_max,
        background=b, t_brightness=tb, t_object=tobj, t_overlap=tov, s_min=s_min, s_max=s_max,
        y0=float(y0), k=float(k), blend="normal" if kind == "object" else "mixed",
        method=method, label=label, variant=variant, mode=mode,
        size_clip=REPRODUCE_SIZE_CLIP if name in TABLE4 else OWN_DATA_SIZE_CLIP,
        score="mean" if name in TABLE4 else OWN_DATA_SCORE,
    )
    if kind == "texture":
        fields.update(resize=264, crop=None, image_size=256, vflip=True)
    elif name not in TABLE4:  # own data is trained, and scored, whole: no centre crop (see OWN_DATA_RESIZE)
        fields.update(resize=OWN_DATA_RESIZE, crop=None)
    if kind == "xray":
        fields.update(rotation=3.0, normalize="none", epochs=240)
    if name in UNALIGNED:
        fields["rotation"] = 5.0
    if name in LONG_TRAINING:
        fields["epochs"] = 560
    if variant in ("B", "C"):  # C: CutPaste's single, unconstrained patch (App. B.1)
        fields["n_max"] = 1
    if mode == "quick" and image_size is None:
        fields.update(epochs=10, batch_size=16)
        image_size = 128
    if image_size is not None:
        fields.update(_scaled_sizes(fields, image_size))
    fields.update(overrides)
    return Config(**fields)


def _borrowed(name: str, like: str, kind: Optional[str], arguments: dict) -> Config:
    """``get_config(like, ...)`` under the name ``name``: every setting of an MVTec AD class."""
    _check(like in MVTEC_CLASSES, f"like must be an MVTec AD class ({', '.join(MVTEC_CLASSES)}), got {like!r}")
    _check(kind is None, f"give kind or like, not both (like={like!r} brings kind {_kind(like)!r})")
    borrowed = get_config(like, **arguments)
    if borrowed.crop is not None:  # own data is trained, and scored, whole (OWN_DATA_RESIZE)
        borrowed = borrowed.replace(**_scaled_sizes(dict(resize=OWN_DATA_RESIZE, crop=None), borrowed.image_size))
    return borrowed.replace(name=name, score=arguments.get("score", OWN_DATA_SCORE))


def describe(config: Config) -> str:
    """The settings a run uses, in a few lines (printed at the start of training)."""
    c = config
    constraints = (f"b {c.background:g}, t_brightness {c.t_brightness:g}, t_object {c.t_object:g}, "
                   f"t_overlap {c.t_overlap:g}" if c.has_background_constraints else "none")
    from_where = "Table 4" if c.name in TABLE4 else "own data"
    return "\n".join([
        f"settings for {c.name!r} ({from_where}): kind {c.kind}, {c.method} {c.label}"
        + (f", ablation {c.variant}" if c.variant else ""),
        f"  patches: n_max {c.n_max}, h {c.h_min:g}-{c.h_max:g}, w {c.w_min:g}-{c.w_max:g}, "
        f"scale {c.s_min:g}-{c.s_max:g}, size_clip {c.size_clip}, background constraints: {constraints}",
        f"  blending {c.blend} ({'source' if c.blend == 'normal' else 'mixed'} gradients), "
        f"logistic y0 {c.y0:g}, k {c.k:.3g}",
        f"  augmentation: resize {c.resize}, centre crop {c.crop or 'none'}, random crop {c.image_size}, "
        f"rotation {c.rotation:g} deg, vertical flip {'yes' if c.vflip else 'no'}",
        f"  training: {c.epochs} epochs, batch {c.batch_size}, mode {c.mode}; image score: {c.score} of the map"])
