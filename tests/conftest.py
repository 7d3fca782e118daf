"""Shared fixtures: small seeded objects and the data directory (skips when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # pytest runs with 2 workers on 2 cores


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data directory (../shared/data or $INTERPLAB_DATA); tests needing it skip without it."""
    from interplab.data import default_data_dir

    env = os.environ.get("INTERPLAB_DATA")
    path = Path(env) if env else default_data_dir()
    if path is None or not path.is_dir():
        pytest.skip("the shared data directory is not available")
    return path
