"""A stand-in for Colab's ``google.colab`` package, for the Colab check (tools/colab_check.py).

The chapters only test ``"google.colab" in sys.modules`` and call ``drive.mount``; the
check's kernel imports this package at start-up, as Colab's runtime does.
"""
from . import drive  # noqa: F401
