"""What logrotate does to a log, step by step, for the rotation tests and bench."""

from __future__ import annotations

import os


def shift(path: str) -> None:
    """logrotate's renaming: path.N -> path.N+1, highest first."""
    n = 1
    while os.path.exists(f"{path}.{n}"):
        n += 1
    for k in range(n - 1, 0, -1):
        os.rename(f"{path}.{k}", f"{path}.{k + 1}")
