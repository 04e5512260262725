import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores: oversubscribing them with intra-op threads only slows small models down.
    torch.set_num_threads(2)


def pytest_runtest_logstart(nodeid, location):
    # .ci/run names the test that was running when a signal (a segfault in torch) killed pytest,
    # which then cannot report it itself.
    marker = os.environ.get("NAS_CURRENT_TEST_FILE")
    if marker:
        Path(marker).write_text(nodeid)
