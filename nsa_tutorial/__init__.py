"""nsa_tutorial: Natural Synthetic Anomalies (Schlüter et al., ECCV 2022), taught and reproduced.

The modules follow the book's chapters: ``poisson`` (Poisson image editing), ``patches``
(patch sampling), ``labels``, ``synthesis`` (NSA and baselines), ``config`` (paper Table 4),
``data``, ``model``, ``train``, ``metrics``, ``evaluate``, ``inference`` (calibration and
prediction; :func:`predict` is also ``nsa_tutorial.predict``) and ``export`` (ONNX);
``book`` holds what the notebooks need outside a book build (on Colab).
"""

__version__ = "0.1.0"


def check_version(book_version: str) -> str:
    """Say clearly when the installed package and the book (or notebook) disagree.

    Every chapter calls this with the version it was written for; a mismatch
    warns (the chapter may still run) instead of failing later in a confusing way.
    """
    import warnings

    if book_version != __version__:
        warnings.warn(f"this notebook was written for nsa_tutorial {book_version}, but {__version__} is "
                      f"installed: install the matching version (pip install nsa-tutorial=={book_version}) "
                      "if something below fails", stacklevel=2)
    return __version__


def __getattr__(name: str):
    """``nsa_tutorial.predict``, imported on first use (it pulls in torch)."""
    if name == "predict":
        from .inference import predict

        return predict
    raise AttributeError(f"module 'nsa_tutorial' has no attribute {name!r}")
