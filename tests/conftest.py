import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores: oversubscribing them with intra-op threads only slows small models down.
    torch.set_num_threads(2)
