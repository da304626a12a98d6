"""Suite-wide hooks: data-set requirements (see ``_data.py``)."""

from __future__ import annotations

import _data  # the tests folder is on sys.path (pytest's rootdir-relative import)
import pytest


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
