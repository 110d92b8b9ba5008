"""Locate the read-only project data folder (``../shared/data`` next to the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def require_data(sub: str = "") -> Path:
    """Path to ``shared/data/<sub>``; skip when absent, but fail under CI (CI has the data)."""
    path = DATA / sub
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing but CI must provide ../shared/data")
        pytest.skip(f"{path} not available")
    return path
