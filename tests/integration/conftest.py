import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .cluster_fixture import start, stop


@pytest.fixture(scope="session")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="histo-it-"))
    try:
        yield start(root / "local")
    finally:
        stop(root / "local")
        if not os.environ.get("HISTO_KEEP_TEST_STATE"):
            shutil.rmtree(root, ignore_errors=True)
