"""Fixtures shared by the test modules (a module may define its own of the same name)."""

import pytest
from helpers import SMALL

from skelcl.data.synthetic import generate_cache


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """24 small synthetic sequences (data seed 3), written once per test module."""
    return generate_cache(tmp_path_factory.mktemp("data") / "tiny", 24, 3, config=SMALL, progress=False)
