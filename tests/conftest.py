import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
LA_DIR = REPO.parent / "shared" / "data" / "la2018"


@pytest.fixture
def la_dir() -> Path:
    """The real LA data beside the checkout; skips the test when it is absent."""
    if not (LA_DIR / "dataset.json").is_file():
        pytest.skip(f"real LA data not found at ../shared/data/la2018 (looked for {LA_DIR / 'dataset.json'})")
    return LA_DIR


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
