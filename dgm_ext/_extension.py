"""Loading the compiled extension ``dgm_ext._C`` with a plain error when that fails.

Without this, a missing or broken ``_C`` surfaces as Python's "cannot import name '_C' from
partially initialized module 'dgm_ext' (most likely due to a circular import)", which sends
users looking for an import cycle. The message built here names the file, the loader's own
error, the torch the file was built against (read from a stamp in its bytes, since the file
cannot be imported) and the installed one, and the command that rebuilds it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import torch

REBUILD = 'pip install --no-build-isolation -e ".[test]"   # from the dgm_ext source folder'
_STAMP = re.compile(rb"dgm_ext-build-stamp: torch=([^;\x00]{1,64});")


class ExtensionLoadError(ImportError):
    """The compiled extension ``dgm_ext._C`` is missing or cannot be loaded."""


def built_against(path: Path) -> str | None:
    """The torch version stamped into a compiled ``_C`` file, or None when there is none."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    m = _STAMP.search(data)
    return m.group(1).decode("ascii", "replace") if m else None


def _candidates(package_dirs: list[str]) -> list[Path]:
    return sorted(
        p
        for d in package_dirs
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
        for p in Path(d).glob(f"_C{suffix}")
    )


def load(package: str, package_dirs: list[str]) -> ModuleType:
    """Imports ``<package>._C``; raises ExtensionLoadError with a diagnosis when it fails."""
    name = f"{package}._C"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ExtensionLoadError(_diagnose(name, package_dirs, exc)) from exc


def _diagnose(name: str, package_dirs: list[str], exc: ImportError) -> str:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    path = Path(spec.origin) if spec is not None and spec.origin else None
    if path is None:
        found = _candidates(package_dirs)
        path = found[0] if found else None
    lines = []
    if path is None or not path.exists():
        lines.append(f"dgm_ext: the compiled extension {name} was not found.")
        lines.append(f"  searched: {', '.join(package_dirs)}")
        lines.append(
            "  The package was installed without building the extension, or a source checkout"
            " of dgm_ext/ shadows the installed package (run from another folder)."
        )
    else:
        lines.append(f"dgm_ext: the compiled extension {name} failed to load.")
        lines.append(f"  file: {path}")
    lines.append(f"  loader error: {type(exc).__name__}: {exc}")
    if path is not None and path.exists():
        stamp = built_against(path)
        lines.append(f"  built against torch: {stamp or 'unknown (no build stamp in the file)'}")
    lines.append(f"  installed torch: {torch.__version__}")
    lines.append("Rebuild it against the installed torch:")
    lines.append(f"  {REBUILD}")
    return "\n".join(lines)
