"""NSA synthesis for a whole batch in PyTorch, on the training device (paper Sec. 3, eq. 1-14).

Book chapter: *Synthetic anomalies* (section "Synthesis on the GPU").

:func:`nsa_tutorial.synthesis.make_anomaly` makes one sample in a few milliseconds on
one CPU core; a large GPU trains faster than the CPUs can feed it.  This module makes
the same anomalies for a batch of ``B`` image pairs at once, with the same
distributions, on any device:

* object masks (eq. 8) as box counts (:func:`object_mask_batch`);
* patch sizes (eq. 5-6), source centres (eq. 7), resize factors (eq. 9) and
  destination corners (eq. 10-12): all ``config.max_tries`` candidates of every patch
  are drawn at once and the first valid one is picked with integral images, gathers and
  (for eq. 12) an FFT cross-correlation, with no loop over retries;
* bilinear resize and placement in one gather (:func:`place_patches`);
* Poisson blending on the patch rectangle, solved exactly with sine transforms
  (:func:`poisson_rect_batch`), one patch slot at a time;
* labels exactly as :func:`nsa_tutorial.labels.make_label` (:func:`label_batch`).

Layout: ``dest`` and ``src`` are uint8 tensors ``B x H x W x 3`` (channels last, as
``torch.from_numpy(np.stack(images))`` gives them; repeat grey images to 3 channels).
The building blocks work on float ``B x C x H x W`` tensors on the 0-255 scale.

Randomness: every random number comes from a *CPU* ``torch.Generator``, in a fixed
order and amount per batch (all ``max_tries`` candidates of all ``n_max`` patch slots,
used or not), and is then moved to the device.  The same generator state therefore
gives the same output and, up to float rounding, the same patches on every device.

The Poisson problem is OpenCV's, as the CPU path's default ``"fast"`` backend
(:func:`nsa_tutorial.poisson.clone_rect`), not the textbook one: on the same patch the
textbook solution changes the image about 1.5 times as much, and so would the labels.
Two small differences remain, invisible in the distributions: float rounding (at most
one grey level after truncation), and a resized object-mask pixel that lands exactly
on 0.5 may round either way.

Only what :func:`supports` says is implemented (NSA, and its ablations A and B): the other
methods and variants raise ``NotImplementedError``; use the CPU path for them.
"""

from .labels import label_batch, median_disk_batch
from .patches import box_count, object_mask_batch, place_patches
from .poisson import poisson_rect_batch
from .synthesis import BatchAnomaly, make_anomaly_batch, supports, synthesize_batch

__all__ = ["BatchAnomaly", "box_count", "label_batch", "make_anomaly_batch", "median_disk_batch",
           "object_mask_batch", "place_patches", "poisson_rect_batch", "supports", "synthesize_batch"]
