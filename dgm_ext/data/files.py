"""Data root resolution, cached checksum verification and optional downloads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "ChecksumError",
    "ChecksumWarning",
    "DatasetNotFoundError",
    "cache_dir",
    "check_md5",
    "data_root",
    "download_allowed",
    "download_file",
    "md5_file",
    "removing_new_folders",
    "verify_md5",
]

DOWNLOAD_TIMEOUT_S = 30.0


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not on disk (and could not be downloaded)."""


class ChecksumError(ValueError):
    """A data file exists but its md5 sum is not the published one."""


class ChecksumWarning(UserWarning):
    """A data file read with ``verify=False`` (``--no-verify``) is not the published one."""


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


def _md5_of(path: str | os.PathLike, expected: str) -> tuple[Path, str]:
    """The resolved path and md5 of a file; a match with ``expected`` is remembered
    in-process and in ``<cache>/md5-stamps.json`` keyed by (path, size, mtime), so a
    published file is hashed once, not on every load."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) == expected:
        return p, expected
    stamp = _read_stamps().get(key[0])
    if stamp == [key[1], key[2], expected]:
        _VERIFIED[key] = expected
        return p, expected
    actual = md5_file(p)
    if actual == expected:
        _VERIFIED[key] = expected
        _write_stamp(key, expected)
    return p, actual


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has md5 ``expected`` (checked once per
    file: see :func:`_md5_of`)."""
    p, actual = _md5_of(path, expected)
    if actual != expected:
        raise ChecksumError(
            f"{p}: md5 {actual} does not match the expected {expected}; the file is corrupt "
            "or not the published one. Delete it (and re-download), or pass verify=False "
            "(--no-verify on the command line) to use it anyway."
        )


# files read unverified whose md5 is not the published one (each warned about once)
_UNPUBLISHED: set[tuple[str, int, int]] = set()


def check_md5(path: str | os.PathLike, expected: str, verify: bool = True) -> None:
    """:func:`verify_md5` when ``verify``; otherwise the file is used whatever its md5, with a
    :class:`ChecksumWarning` (once per file and process) when it is not the published one."""
    if verify:
        verify_md5(path, expected)
        return
    p, actual = _md5_of(path, expected)
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if actual != expected and key not in _UNPUBLISHED:
        _UNPUBLISHED.add(key)
        warnings.warn(
            f"{p}: md5 {actual} is not the published {expected}; using it anyway "
            "(verify=False / --no-verify): numbers computed on it are not comparable with "
            "published ones",
            ChecksumWarning,
            stacklevel=3,
        )


@contextlib.contextmanager
def removing_new_folders(folder: Path) -> Iterator[None]:
    """On an exception, remove ``folder`` and the folders above it that did not exist
    before and are still empty (a failed download leaves no empty data folders behind)."""
    folder = Path(folder)
    new = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for p in new:
            try:
                p.rmdir()  # only empty folders: files a partial download kept stay
            except OSError:
                break
        raise


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
