"""Debian's headless Chromium, cut off from the network: what `make slides` (tools/slides.py) and
`make pdf` (tools/pdf.py) open their pages with."""

from __future__ import annotations

import subprocess
import tempfile

CHROMIUM = "/usr/bin/chromium"


def run(url: str, *flags: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    """Chromium on ``url`` with ``flags``, in a fresh profile, reaching no network: every host name
    fails to resolve and Chromium's own background connections are off."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", *flags, url],
            capture_output=True, text=True, timeout=timeout, check=check)
