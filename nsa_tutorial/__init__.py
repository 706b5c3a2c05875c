"""nsa_tutorial: Natural Synthetic Anomalies (Schlüter et al., ECCV 2022), taught and reproduced.

The modules follow the book's chapters: ``poisson`` (Poisson image editing), ``patches``
(patch sampling), ``labels``, ``synthesis`` (NSA and baselines) with ``batched`` (the same
for a whole batch in PyTorch: ``batched.poisson``, ``batched.patches``, ``batched.labels``,
``batched.synthesis``), ``config`` (paper Table 4), ``model``, ``training_set``, ``train`` (the
recipe and its loop), ``checkpoint`` (the run folder's files), ``runtime`` (device and stop
signals) and ``distributed`` (Training), ``layout`` (images and the MVTec AD layout),
``metrics`` and ``evaluate`` (Evaluation), ``sources`` (download, embedded data, chest X-rays)
and ``defects`` (made-up texture defects) (Beyond MVTec AD), ``calibration``, ``inference``, ``export`` and
``pretrained`` (Using a trained model).
"""

__version__ = "0.1.0"


def check_version(book_version: str) -> None:
    """Say clearly when the installed package and the book (or notebook) disagree.

    Every chapter calls this with the version it was written for; a mismatch
    warns (the chapter may still run) instead of failing later in a confusing way. It
    returns nothing, so the chapter's cell shows no output when the versions agree.
    """
    import warnings

    if book_version != __version__:
        warnings.warn(f"this notebook was written for nsa_tutorial {book_version}, but {__version__} is "
                      f"installed: install the matching version (pip install nsa-tutorial=={book_version}) "
                      "if something below fails", stacklevel=2)


def __getattr__(name: str):
    """``nsa_tutorial.predict``, imported on first use (it pulls in torch)."""
    if name == "predict":
        from .inference import predict

        return predict
    raise AttributeError(f"module 'nsa_tutorial' has no attribute {name!r}")
