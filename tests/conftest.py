import os
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # CI has 2 cores: oversubscribing them with intra-op threads only slows small models down.
    torch.set_num_threads(2)
    # Pinned, as a user pins it: tests compare runs bit for bit, and the count fit's probe would
    # choose depends on the machine's load (tests/test_device.py tests the probe itself).
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


def pytest_runtest_logstart(nodeid, location):
    # .ci/run names the test that was running when a signal (a segfault in torch) killed pytest,
    # which then cannot report it itself.
    marker = os.environ.get("NAS_CURRENT_TEST_FILE")
    if marker:
        Path(marker).write_text(nodeid)


def _get(app, path: str) -> tuple[int, bytes]:
    """One GET request to a WSGI app (optuna-dashboard's), without a server: (status, body)."""
    environ: dict = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return int(status[0].split()[0]), body


@pytest.fixture
def http_get():
    return _get


# On CUDA, each of these makes the host wait for the device: nonzero (and masked_select, which calls
# it) reads a count back, _local_scalar_dense is .item(), lift_fresh is a tensor built from Python data.
HOST_SYNCS = {"masked_select", "nonzero", "_local_scalar_dense", "lift_fresh", "item"}


class OpLog(TorchDispatchMode):
    """Every ATen op that runs, by name: `with OpLog() as log: ...`, then `log.ops`, `log.syncs()`."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))

    def syncs(self) -> list[str]:
        return [op for op in self.ops if op in HOST_SYNCS]


@pytest.fixture
def op_log():
    return OpLog
