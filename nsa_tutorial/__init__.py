"""nsa_tutorial: Natural Synthetic Anomalies (Schlüter et al., ECCV 2022), taught and reproduced.

The modules follow the book's chapters: ``poisson`` (Poisson image editing), ``patches``
(patch sampling), ``labels``, ``synthesis`` (NSA and baselines), ``config`` (paper Table 4),
``data``, ``model``, ``train``, ``metrics`` and ``evaluate``; ``book`` holds what the
notebooks need outside a book build (on Colab).
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
