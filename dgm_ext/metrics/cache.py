"""Generic on-disk cache helpers for trained metric networks.

* :func:`cache_root` -- where cached files live: ``cache_dir`` argument, else
  ``$DGM_EXT_CACHE``, else ``$XDG_CACHE_HOME/dgm_ext``, else ``~/.cache/dgm_ext``
  (the same folder as :func:`dgm_ext.data.cache_dir`).
* :func:`make_key` / :func:`hash_arrays` / :func:`source_hash` -- content keys: a sha256 over
  canonical JSON of the parts (data hashes, code hashes, configs), so any change of data,
  training code or configuration gives a new key and a new file.
* :func:`atomic_save` -- ``torch.save`` to a temp file in the target's folder, fsync,
  ``os.replace``: readers (and racing writers, e.g. several ``torchrun`` ranks) see either the
  old file or a complete new one, never a partial one; the last rename wins.
* :func:`safe_load` -- ``torch.load(weights_only=True)`` that never raises on a bad file:
  it returns a :class:`LoadResult` saying whether the file was missing, loaded, or corrupt
  (and why), so the caller can retrain, warn, and overwrite atomically.
* :func:`file_lock` -- an advisory lock file (``fcntl.flock``) so that concurrent processes
  train once and the others wait and then load; a no-op where ``fcntl`` is missing, and it
  gives up waiting (with a warning) after ``timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.files import cache_dir as _default_cache_dir
from ..train.checkpoint import atomic_save  # one atomic writer for checkpoints and caches

__all__ = [
    "CacheWarning",
    "LoadResult",
    "atomic_save",
    "cache_root",
    "file_lock",
    "hash_arrays",
    "make_key",
    "safe_load",
    "source_hash",
]


class CacheWarning(UserWarning):
    """A cache file was unusable (corrupt, stale) or could not be written or locked."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$DGM_EXT_CACHE``, else
    ``$XDG_CACHE_HOME/dgm_ext``, else ``~/.cache/dgm_ext`` (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return _default_cache_dir()


def _canonical(obj: Any) -> Any:
    """JSON-able canonical form: tuples -> lists, dict keys sorted by json.dumps, paths -> str."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"make_key: cannot hash a {type(obj).__name__} ({obj!r})")


def make_key(*parts: Any) -> str:
    """Hex sha256 of the canonical JSON of ``parts`` (str, numbers, bools, None, lists, tuples,
    dicts, paths). Equal parts give equal keys; any changed part gives a different key."""
    text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def hash_arrays(*arrays: np.ndarray | torch.Tensor) -> str:
    """Hex sha256 over the dtypes, shapes and bytes of arrays or (CPU-copied) tensors."""
    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().contiguous().numpy()
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def source_hash(*objs: Callable[..., Any] | type) -> str:
    """Hex sha256 of the source code of functions/classes (``inspect.getsource``); when the
    source is unavailable (e.g. frozen installs) the qualified name and, for functions, the
    bytecode are hashed instead."""
    h = hashlib.sha256()
    for obj in objs:
        h.update(f"{obj.__module__}.{obj.__qualname__};".encode())
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):
            code = getattr(obj, "__code__", None)
            if code is not None:
                h.update(code.co_code)
    return h.hexdigest()


@dataclass(frozen=True)
class LoadResult:
    """Outcome of :func:`safe_load`: ``status`` is ``"missing"``, ``"ok"`` or ``"corrupt"``;
    ``obj`` the loaded object when ok; ``reason`` a human-readable cause when corrupt."""

    status: str
    obj: Any = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def safe_load(
    path: str | os.PathLike,
    required_keys: Iterable[str] = (),
    validate: Callable[[dict[str, Any]], str | None] | None = None,
) -> LoadResult:
    """Load ``path`` with ``torch.load(weights_only=True)`` without ever raising on bad data.

    The file is ``"corrupt"`` when it cannot be read or unpickled (truncated, garbage,
    disallowed types), is not a dict, lacks one of ``required_keys``, or ``validate(obj)``
    returns an error string (or raises). Nothing is deleted or modified.
    """
    path = Path(path)
    if not path.is_file():
        return LoadResult("missing")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any read/unpickle failure means "corrupt"
        return LoadResult("corrupt", reason=f"unreadable ({type(exc).__name__}: {exc})")
    if not isinstance(obj, dict):
        return LoadResult("corrupt", reason=f"expected a dict, got {type(obj).__name__}")
    missing = [k for k in required_keys if k not in obj]
    if missing:
        return LoadResult("corrupt", reason=f"missing keys {missing}")
    if validate is not None:
        try:
            err = validate(obj)
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
        if err:
            return LoadResult("corrupt", reason=err)
    return LoadResult("ok", obj=obj)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = 900.0, poll: float = 0.2) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the ``with`` block.

    Yields True when the lock is held; False (with a :class:`CacheWarning`) when locking is
    unsupported, the lock file cannot be created, or ``timeout`` seconds passed -- the caller
    then proceeds unlocked, which is safe because writes are atomic anyway (only duplicated
    work). The lock is released by the OS if the process dies.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield False
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        warnings.warn(f"cannot create lock file {path} ({exc}); continuing unlocked",
                      CacheWarning, stacklevel=3)  # fmt: skip
        yield False
        return
    held = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except OSError:
                if time.monotonic() >= deadline:
                    warnings.warn(f"waited {timeout:.0f} s for lock {path}; continuing unlocked",
                                  CacheWarning, stacklevel=3)  # fmt: skip
                    break
                time.sleep(poll)
        yield held
    finally:
        if held:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
