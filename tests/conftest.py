import os
import tempfile

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a longer test (tens of seconds); still runs by default")
    # Everything the tests run (notebooks included, through nbval) saves its runs in a temporary directory,
    # never in the book's own results/ folder, so nothing a test writes can be loaded by the book.
    if not os.environ.get("LOPBOOK_RESULTS"):
        os.environ["LOPBOOK_RESULTS"] = tempfile.mkdtemp(prefix="lopbook-test-results-")


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests' networks are tiny and their steps overhead-bound: one CPU thread is fastest, and keeps the suite
    fast when the other core is busy. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
