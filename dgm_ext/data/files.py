"""Data root resolution, cached checksum verification and optional downloads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ChecksumError",
    "DatasetNotFoundError",
    "cache_dir",
    "data_root",
    "download_allowed",
    "download_file",
    "md5_file",
    "verify_md5",
]

DOWNLOAD_TIMEOUT_S = 30.0


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not on disk (and could not be downloaded)."""


class ChecksumError(ValueError):
    """A data file exists but its md5 sum is not the published one."""


def cache_dir() -> Path:
    """The dgm_ext cache folder: ``$DGM_EXT_CACHE``, else ``$XDG_CACHE_HOME/dgm_ext``,
    else ``~/.cache/dgm_ext`` (not created here)."""
    env = os.environ.get("DGM_EXT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dgm_ext"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data root: ``root`` if given, else ``$DGM_EXT_DATA``, else :func:`cache_dir`."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("DGM_EXT_DATA")
    if env:
        return Path(env).expanduser()
    return cache_dir()


def download_allowed(download: bool) -> bool:
    """True when ``download`` is set and ``$DGM_EXT_NO_DOWNLOAD`` is not (1/true/yes)."""
    off = os.environ.get("DGM_EXT_NO_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")
    return bool(download) and not off


def md5_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, streamed."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# (resolved path, size, mtime_ns) -> md5 verified in this process
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _stamp_path() -> Path:
    return cache_dir() / "md5-stamps.json"


def _read_stamps() -> dict[str, list]:
    try:
        data = json.loads(_stamp_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_stamp(key: tuple[str, int, int], md5: str) -> None:
    """Best effort: remember a verified checksum in the cache folder (atomic rewrite)."""
    path = _stamp_path()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        stamps = _read_stamps()
        stamps[key[0]] = [key[1], key[2], md5]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".md5-stamps.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(stamps, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has md5 ``expected``.

    A successful check is remembered in-process and in ``<cache>/md5-stamps.json`` keyed by
    (path, size, mtime), so a file is hashed once, not on every load.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) == expected:
        return
    stamp = _read_stamps().get(key[0])
    if stamp == [key[1], key[2], expected]:
        _VERIFIED[key] = expected
        return
    actual = md5_file(p)
    if actual != expected:
        raise ChecksumError(
            f"{p}: md5 {actual} does not match the expected {expected}; the file is corrupt "
            "or not the published one. Delete it (and re-download) or pass verify=False."
        )
    _VERIFIED[key] = expected
    _write_stamp(key, expected)


def download_file(urls: Sequence[str], dest: Path, md5: str | None = None) -> None:
    """Download ``dest`` from the first working URL (urllib, short timeout), check its md5,
    and move it into place atomically. Raises ``OSError`` listing every failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with (
                os.fdopen(fd, "wb") as f,
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
            ):
                while block := resp.read(1 << 20):
                    f.write(block)
            if md5 is not None and (got := md5_file(tmp)) != md5:
                raise ChecksumError(f"downloaded md5 {got} != expected {md5}")
            os.replace(tmp, dest)
            return
        except Exception as exc:  # network errors come in many types; report them all
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    raise OSError(f"could not download {dest.name}: " + "; ".join(errors))
