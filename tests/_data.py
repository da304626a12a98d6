"""Where the tests find the data sets, the way the library does.

``DATA`` is the library's data root, read once when the test session starts (tests later
point ``$DGM_EXT_DATA`` elsewhere with ``monkeypatch``): ``$DGM_EXT_DATA``, else the
documented default (:func:`dgm_ext.data.files.data_root`). A relative ``$DGM_EXT_DATA`` is
made absolute (against the folder pytest starts in) for the whole session. A test that needs
a data set calls :func:`require` (or carries :data:`needs_mnist` / :data:`needs_fashion`): it is
skipped, with the reason, when the files are missing, unless ``$DGM_EXT_REQUIRE_DATA`` is
set (CI sets it), in which case it fails: a CI run cannot pass with a data test skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dgm_ext.data import DatasetNotFoundError, find_mnist_files
from dgm_ext.data.files import data_root

_env = os.environ.get("DGM_EXT_DATA")
if _env and not Path(_env).expanduser().is_absolute():
    # tests and README snippets run in temporary folders: a relative data folder (CI passes
    # ../shared/data) means the one seen from where pytest was started
    os.environ["DGM_EXT_DATA"] = str(Path(_env).expanduser().resolve())
DATA: Path = data_root()
REQUIRED = os.environ.get("DGM_EXT_REQUIRE_DATA", "").strip().lower() in ("1", "true", "yes")


def missing(name: str = "mnist") -> str | None:
    """Why data set ``name`` ("mnist" or "fashion-mnist") cannot be found under ``DATA``,
    or None when its four files are there. Never downloads."""
    if name not in ("mnist", "fashion-mnist"):
        raise ValueError(f"unknown data set {name!r}")
    try:
        find_mnist_files(root=DATA, fashion=name == "fashion-mnist", download=False)
    except DatasetNotFoundError as exc:
        return f"{name} files not found under {DATA} ($DGM_EXT_DATA): {exc}"
    return None


def require(name: str = "mnist") -> Path:
    """``DATA`` if data set ``name`` is there; otherwise skip the calling test, or fail it
    when ``$DGM_EXT_REQUIRE_DATA`` is set."""
    why = missing(name)
    if why is not None:
        if REQUIRED:
            pytest.fail(f"DGM_EXT_REQUIRE_DATA is set but {why}", pytrace=False)
        pytest.skip(why)
    return DATA


# Markers for whole tests or modules; conftest.py turns them into require() calls.
needs_mnist = pytest.mark.needs_data("mnist")
needs_fashion = pytest.mark.needs_data("fashion-mnist")
