"""Suite-wide hooks and fixtures: data-set requirements (see ``_data.py``) and ``one_thread``."""

from __future__ import annotations

import _data  # the tests folder is on sys.path (pytest's rootdir-relative import)
import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_data(name): the test reads data set `name` (mnist, fashion-mnist) from "
        "$DGM_EXT_DATA; skipped without it, failed when $DGM_EXT_REQUIRE_DATA is set",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers(name="needs_data"):
        for name in mark.args or ("mnist",):
            _data.require(name)


@pytest.fixture
def one_thread():
    """torch on one thread for the test, restored after: the tests' tensors are small, and on
    2 shared CI cores a second thread only adds contention (often several times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def data_env(monkeypatch):
    """``$DGM_EXT_DATA`` set to the tests' data folder (commands run in-process read it), and
    torch's thread count restored after (the CLI's ``--threads`` sets it)."""
    monkeypatch.setenv("DGM_EXT_DATA", str(_data.DATA))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
