import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))

import pytest  # noqa: E402 - after the path for rvm_clips


@pytest.fixture(scope="module")
def model():
    """The tiny random-weight network of tests/io/rvm_clips.py (seed 0), once per module."""
    from rvm_clips import tiny_model

    return tiny_model()
