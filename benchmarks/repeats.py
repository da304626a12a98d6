"""Same-run speed ratios over repeated benchmark runs, judged by the issue-13 protocol.

    python benchmarks/repeats.py run1.json run2.json run3.json [--subject PROVIDER]

Each JSON is one ``pytest benchmarks/... --benchmark-json`` run (same command, run one
after the other on a quiet machine). In every benchmark group, the subject is the library's
provider (``dgm_ext``, ``trainer-fused``, ``trainer`` or ``fused``, the first present;
``--subject`` picks another) and every other provider of the group is a baseline. For each
run the ratio is ``median(baseline) / median(subject)`` over that run's rounds (> 1: the
library is faster). A target "holds" when the median of the runs' ratios is >= 1.0 and none
is below 0.97 (within 3 % of 1 a single ratio is noise on two cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

SUBJECTS = ("dgm_ext", "trainer-fused", "trainer", "fused")


def _medians(path: str) -> tuple[dict[str, dict[str, float]], str]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        provider = info.get("provider")
        if provider is None or provider == "copy":
            continue
        calls = info.get("calls_per_round", 1) or 1
        out[b["group"]][provider] = b["stats"]["median"] / calls
    return out, data.get("datetime", "?")


def _fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.0f} µs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="pytest-benchmark JSON files, one per run")
    parser.add_argument("--subject", default=None, help="the provider judged (default: auto)")
    args = parser.parse_args(argv)
    runs = [_medians(p) for p in args.runs]
    groups: list[str] = []
    for medians, _ in runs:
        groups += [g for g in medians if g not in groups]
    print(f"{len(runs)} runs: " + ", ".join(when for _, when in runs))
    print()
    print("| benchmark | subject (median) | baseline (median) | × per run | median × | holds |")
    print("|---|---|---|---|---:|:---:|")
    failures = 0
    for group in groups:
        present = [m.get(group, {}) for m, _ in runs]
        providers = sorted(set().union(*present))
        subject = args.subject or next((s for s in SUBJECTS if s in providers), None)
        if subject is None or subject not in providers:
            continue
        for base in providers:
            if base == subject:
                continue
            ratios = [p[base] / p[subject] for p in present if base in p and subject in p]
            if not ratios:
                continue
            med = statistics.median(ratios)
            holds = med >= 1.0 and min(ratios) >= 0.97
            failures += not holds
            subj_t = statistics.median(p[subject] for p in present if subject in p)
            base_t = statistics.median(p[base] for p in present if base in p)
            label = group.replace(" | ", ", ")  # no "|" inside a markdown cell
            print(
                f"| {label} | {subject} {_fmt_time(subj_t)} | {base} {_fmt_time(base_t)} "
                f"| {' / '.join(f'{r:.2f}' for r in ratios)} | {med:.2f} "
                f"| {'yes' if holds else '**no**'} |"
            )
    print()
    print(f"{failures} comparison(s) where the subject is not at least as fast")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
