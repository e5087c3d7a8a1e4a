import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a longer test (tens of seconds); still runs by default")


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests' networks are tiny and their steps overhead-bound: one CPU thread is fastest, and keeps the suite
    fast when the other core is busy. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
