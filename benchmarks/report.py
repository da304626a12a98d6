"""Prints the ratio table of a bench_ops.py run (pytest-benchmark JSON) as markdown.

    python benchmarks/report.py benchmarks/ops.json

Columns: best-of-rounds times (ms) of dgm_ext, the eager reference and torch.compile(reference); the
speed-ups over both; and the memory floor = bytes a fused op must move / measured copy
bandwidth (read + write of a large tensor), with dgm_ext's and torch.compile's distance to it.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    times: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    floors: dict[tuple[str, str], int] = {}
    quick = False
    copy_bw = None
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if "case" not in info or "mode" not in info:  # not an op benchmark (e.g. the VAE trainer's)
            continue
        med = b["stats"]["min"]  # least-disturbed round: robust to other processes on 2 cores
        if info["provider"] == "copy":
            copy_bw = info["bytes"] / med
            continue
        times[(info["case"], info["mode"])][info["provider"]] = med
        floors[(info["case"], info["mode"])] = info["floor_bytes"]
        quick = quick or info.get("quick", False)
    machine = data.get("machine_info", {})
    print(
        f"machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
        f"{machine.get('cpu', {}).get('count', '?')} cpus; copy bandwidth "
        f"{copy_bw / 1e9:.2f} GB/s"
        if copy_bw
        else "copy bandwidth: not measured"
    )
    if quick:
        print("QUICK smoke run (DGM_EXT_BENCH_QUICK=1): sizes are tiny, timings meaningless")
    print()
    print(
        "| op | mode | dgm_ext ms | eager ms | compile ms | × eager | × compile "
        "| floor ms | dgm_ext / floor | compile / floor |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (case, mode), t in times.items():
        d, e, c = (t.get(p) for p in ("dgm_ext", "eager", "compile"))
        floor = floors[(case, mode)] / copy_bw if copy_bw else None

        def ms(x):
            return f"{x * 1e3:.3f}" if x else "–"

        def ratio(a, b):
            return f"{a / b:.2f}" if a and b else "–"

        print(
            f"| {case} | {mode} | {ms(d)} | {ms(e)} | {ms(c)} | {ratio(e, d)} | {ratio(c, d)} "
            f"| {ms(floor)} | {ratio(d, floor)} | {ratio(c, floor)} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/ops.json")
