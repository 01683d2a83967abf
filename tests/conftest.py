"""Shared test helpers: where the reference fixtures live."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MICO_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def split_cases() -> list[dict]:
    """Reference splits made by an independent C++ std::mt19937 implementation."""
    path = SHARED / "fixtures" / "mico_splits.json"
    if not path.is_file():
        pytest.fail(f"{path} missing: the shared fixtures must sit beside the repository")
    return json.loads(path.read_text())
