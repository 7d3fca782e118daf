"""Shared fixtures: small seeded objects and the data directory (skips when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

# pytest runs 2 workers on 2 cores: one thread each, inherited by the CLI subprocesses the
# tests start (set before torch is imported, since OpenMP reads it at start-up)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data directory (../shared/data or $INTERPLAB_DATA); tests needing it skip without it."""
    from interplab.data import default_data_dir

    env = os.environ.get("INTERPLAB_DATA")
    path = Path(env) if env else default_data_dir()
    if path is None or not path.is_dir():
        pytest.skip("the shared data directory is not available")
    return path
