"""The self-supervised training set: normal images with synthetic anomalies, as tensors, and the
seeded order in which the training loop draws them.

Book chapter: *Training*.

:class:`SyntheticAnomalyDataset` makes sample ``i`` of epoch ``e`` from ``(seed, e, i)``;
:func:`epoch_loader` batches a dataset in an order that depends on ``(seed, epoch)`` only, with
DataLoader workers that start once per run and reseed per epoch (:func:`stream_seed` gives every
random stream of a run its own seed), so that a stopped run resumes exactly.
"""

from __future__ import annotations

import random
import signal
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from . import distributed
from .layout import Category, read_image, resize_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class SyntheticAnomalyDataset(Dataset):
    """Self-supervised training samples: a normal image with synthetic anomalies and its label map.

    All training images are loaded once, resized to ``config.resize`` (uint8, in memory).
    Sample ``i`` of epoch ``e`` draws everything from ``default_rng([seed, e, i])``, so a seed
    gives the same samples for any number of DataLoader workers.  Call :meth:`set_epoch` before
    each epoch (:func:`nsa_tutorial.train.train` does; in the persistent DataLoader workers of :func:`epoch_loader`
    the epoch travels with every index).
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

    def raw_pair(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The augmented uint8 ``(dest, src)`` pair of sample ``index``, before synthesis: what
        :func:`nsa_tutorial.train.train` hands to :mod:`nsa_tutorial.batched` on the training device."""
        dest, src, _ = self.pair(int(index), self._rng(index))
        return torch.from_numpy(dest), torch.from_numpy(src)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rng = self._rng(index)
        dest, src, _ = self.pair(int(index), rng)
        synthesize = self.synthesize
        if synthesize is None:
            from nsa_tutorial.synthesis import synthesize
        image, label = synthesize(dest, src, self.config, rng)
        label = torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))[None]
        return to_tensor(image, self.config.normalize), label


# --------------------------------------------------------------------------- what the loop iterates

#: The random streams of a run, each with its own id in the key of :func:`stream_seed`.
STREAMS = {"shuffle": 0, "synthesis": 1, "worker": 2}


def stream_seed(seed: int, epoch: int, stream: str, rank: int = 0, worker: int = 0) -> int:
    """The 64-bit seed of one random stream of a run: the shuffle order of an epoch, the batched
    synthesis generator of an epoch, or a DataLoader worker's generators in an epoch.

    Derived with :class:`numpy.random.SeedSequence` from the whole key ``(seed, epoch, stream id,
    rank, worker)``, always five words long (SeedSequence pads a shorter key with zeros, so keys of
    different lengths could meet), so distinct keys give unrelated streams whatever the numbers (an
    arithmetic rule such as ``seed * 1000 + epoch`` gives two streams the same seed sooner or later).
    ``rank``: the process of a multi-process run (0 for one process).
    """
    key = (seed, epoch, STREAMS[stream], rank, worker)
    if any(not isinstance(k, (int, np.integer)) or k < 0 for k in key):
        raise ValueError(f"seed, epoch, rank and worker must be non-negative integers, got {key}")
    return int(np.random.SeedSequence(tuple(int(k) for k in key)).generate_state(1, np.uint64)[0])


def epoch_loader(train_set: Dataset, batch_size: int, num_workers: int, device: torch.device) -> DataLoader:
    """Batches of ``train_set`` in an order set per epoch by ``loader.sampler.set_epoch``;
    workers start once per run, not once per epoch (``persistent_workers``)."""
    return DataLoader(_EpochDataset(train_set), batch_size=batch_size, sampler=EpochSampler(len(train_set)),
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=device.type == "cuda", worker_init_fn=_init_worker,
                      generator=torch.Generator())  # keeps the loader off torch's global generator


class EpochSampler(Sampler):
    """Shuffled indices of one epoch, each as ``(epoch, seed, index)`` (``seed``: the run's).

    Persistent DataLoader workers keep their own copy of the dataset for the whole run, so
    ``set_epoch`` in the main process does not reach them: the epoch travels with every index.
    """

    def __init__(self, n: int) -> None:
        self.n, self.epoch, self.seed = n, 0, 0

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.epoch, self.seed = epoch, seed

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        shuffle = stream_seed(self.seed, self.epoch, "shuffle")
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(shuffle))
        return ((self.epoch, self.seed, i) for i in order.tolist())


class _EpochDataset(Dataset):
    """``dataset`` indexed by :class:`EpochSampler`'s keys.  In a worker, the first item of an
    epoch sets the dataset's epoch and reseeds Python's, numpy's and torch's generators from
    (seed, epoch, worker), as new workers each epoch would be; the main process keeps its state."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset, self.epoch = dataset, None
        self.rank = distributed.rank()  # set here, in the main process: workers need not see the group

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple):
        epoch, seed, index = key
        worker = get_worker_info()
        if worker is not None and epoch != self.epoch:
            self.epoch = epoch
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            worker_seed = stream_seed(seed, epoch, "worker", rank=self.rank, worker=worker.id)
            random.seed(worker_seed)
            np.random.seed(worker_seed % 2**32)
            torch.manual_seed(worker_seed)
        return self.dataset[index]


def _init_worker(worker_id: int) -> None:
    """DataLoader workers already run one per core: synthesis's small matrix products
    (:func:`nsa_tutorial.poisson._dst_rows`) must not start BLAS threads of their own.  Ctrl-C
    and SIGTERM are for the main process, which needs its workers to finish the epoch."""
    threadpool_limits(limits=1, user_api="blas")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class RawPairs(Dataset):
    """``dataset``'s augmented uint8 ``(dest, src)`` pairs (its ``raw_pair``), for synthesis on the
    training device; the dataset itself is left as it is."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int):
        return self.dataset.raw_pair(index)
