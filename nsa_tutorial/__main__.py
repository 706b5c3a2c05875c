"""``python -m nsa_tutorial ...`` is the ``nsa-tutorial`` command (and what ``torchrun -m`` runs)."""

import sys

from nsa_tutorial.cli import main

sys.exit(main())
