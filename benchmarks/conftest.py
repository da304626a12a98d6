"""Benchmark setup: import path for cases.py and a steady-state allocator.

glibc returns large freed blocks to the OS, so every iteration of a benchmark that allocates
tens of MB pays fresh page faults, and how many depends on what ran before in the process
(the same case measured 4 ms alone and 9.6 ms after the large Bernoulli cases). Keeping freed
memory in the process, as a training loop's allocator does in steady state, makes timings
reproducible; it applies to every provider alike.
"""

import ctypes
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    _libc.mallopt(_M_TRIM_THRESHOLD, 1 << 62)
except OSError:  # not glibc: leave the allocator alone
    pass
