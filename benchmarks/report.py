"""Prints the tables of a benchmarks run (pytest-benchmark JSON) as markdown, one per device.

    python benchmarks/report.py benchmarks/ops.json

Op table (bench_ops.py), per device: best-of-rounds times (ms, per call: CUDA rounds of
several calls are divided by ``calls_per_round``) of dgm_ext, the eager reference and
torch.compile(reference); the speed-ups over both; the memory floor = minimal bytes a fused
op must move (``cases.floor_bytes``) / the copy bandwidth measured on the same device (read +
write of a large tensor; device-to-device on CUDA), with dgm_ext's and torch.compile's
distance to it; and the bandwidth each provider achieves, floor bytes / time (GB/s, to
compare with the device's copy bandwidth in the table's heading).
VAE table (bench_vae_trainer.py), per device: fused vs reference, and which data was timed
(random images when MNIST was not found are flagged).
GAN table (bench_gan.py, ``extra_info["suite"] == "gan"``), per device: fused, reference and
plain PyTorch (BCE-with-logits) per call or per training step, and the ratios to fused.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

PROVIDERS = ("dgm_ext", "eager", "compile")


def _ms(x):
    if not x:
        return "–"
    ms = x * 1e3
    return f"{ms:.3f}" if ms >= 1 else f"{ms:#.3g}"  # 3 significant digits below 1 ms (CUDA)


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "–"


def _gbs(nbytes, t):
    if not (nbytes and t):
        return "–"
    gbs = nbytes / t / 1e9
    return f"{gbs:.1f}" if gbs >= 1 else f"{gbs:.3f}"


def _device_title(device: str, names: dict[str, str], machine: dict) -> str:
    if names.get(device):
        return f"{device}: {names[device]}"
    if device == "cpu":
        cpu = machine.get("cpu", {})
        return f"cpu: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} cpus"
    return device


def main(path: str) -> None:
    data = json.loads(Path(path).read_text())
    machine = data.get("machine_info", {})
    # device -> (case, mode) -> provider -> seconds per call
    times: dict[str, dict[tuple[str, str], dict[str, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    floors: dict[tuple[str, str], int] = {}
    copy_bw: dict[str, float] = {}
    names: dict[str, str] = {}
    # device -> group -> provider -> seconds; (device, group) -> data sources ("mnist", "random")
    vae: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    vae_data: dict[tuple[str, str], set[str]] = defaultdict(set)
    # device -> group -> provider -> seconds per call (bench_gan.py)
    gan: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    other: list[tuple[str, str, str, float, str]] = []
    quick = False
    for b in data["benchmarks"]:
        info = b["extra_info"]
        device = info.get("device", "cpu")
        if info.get("device_name"):
            names[device] = info["device_name"]
        quick = quick or info.get("quick", False)
        best = b["stats"]["min"]  # least-disturbed round: robust to other processes on 2 cores
        if info.get("suite") == "gan":
            group = b["group"] or b["name"]
            gan[device][group][info["provider"]] = best / info.get("calls_per_round", 1)
            continue
        if "case" not in info or "mode" not in info:
            group = b["group"] or b["name"]
            if info.get("provider") in ("fused", "reference"):  # the VAE benchmarks
                vae[device][group][info["provider"]] = best
                vae_data[(device, group)].add(info.get("data", "unknown"))
            else:  # e.g. the metrics benchmarks: best time per benchmark
                variant = info.get("provider") or info.get("kind") or b["name"]
                other.append((device, group, variant, best, info.get("data", "")))
            continue
        per_call = best / info.get("calls_per_round", 1)
        if info["provider"] == "copy":
            copy_bw[device] = info["bytes"] / per_call
            continue
        times[device][(info["case"], info["mode"])][info["provider"]] = per_call
        floors[(info["case"], info["mode"])] = info["floor_bytes"]

    if quick:
        print("QUICK smoke run (DGM_EXT_BENCH_QUICK=1): sizes are tiny, timings meaningless")
        print()
    for device in sorted(times.keys() | copy_bw.keys(), key=lambda d: (d != "cpu", d)):
        bw = copy_bw.get(device)
        print(
            f"### {_device_title(device, names, machine)}; copy bandwidth "
            + (f"{bw / 1e9:.2f} GB/s" if bw else "not measured")
        )
        print()
        print(
            "| op | mode | dgm_ext ms | eager ms | compile ms | × eager | × compile "
            "| floor ms | dgm_ext / floor | compile / floor "
            "| dgm_ext GB/s | eager GB/s | compile GB/s |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (case, mode), t in times[device].items():
            d, e, c = (t.get(p) for p in PROVIDERS)
            nbytes = floors[(case, mode)]
            floor = nbytes / bw if bw else None
            print(
                f"| {case} | {mode} | {_ms(d)} | {_ms(e)} | {_ms(c)} "
                f"| {_ratio(e, d)} | {_ratio(c, d)} "
                f"| {_ms(floor)} | {_ratio(d, floor)} | {_ratio(c, floor)} "
                f"| {_gbs(nbytes, d)} | {_gbs(nbytes, e)} | {_gbs(nbytes, c)} |"
            )
        print()

    for device in sorted(vae, key=lambda d: (d != "cpu", d)):
        print(f"### VAE end to end, {_device_title(device, names, machine)}")
        print()
        if any("random" in vae_data[(device, g)] for g in vae[device]):
            print(
                "**MNIST was not found (DGM_EXT_DATA unset or files missing): these timings "
                "used RANDOM binary images, not MNIST.**"
            )
            print()
        print("| benchmark | fused ms | reference ms | × reference | data |")
        print("|---|---:|---:|---:|---|")
        for group, t in vae[device].items():
            f, r = t.get("fused"), t.get("reference")
            src = ", ".join(sorted(vae_data[(device, group)]))
            label = group.replace(" | ", ": ")  # no "|" inside a markdown cell
            print(f"| {label} | {_ms(f)} | {_ms(r)} | {_ratio(r, f)} | {src} |")
        print()

    for device in sorted(gan, key=lambda d: (d != "cpu", d)):
        print(f"### GAN, {_device_title(device, names, machine)}")
        print()
        print(
            "plain: `F.binary_cross_entropy_with_logits` (losses), a hand-written PyTorch "
            "loop (train steps); × = its time / fused time (> 1: fused is faster)."
        )
        print()
        print("| benchmark | fused ms | reference ms | plain ms | × reference | × plain |")
        print("|---|---:|---:|---:|---:|---:|")
        for group, t in gan[device].items():
            f, r, p = t.get("fused"), t.get("reference"), t.get("plain")
            label = group.replace(" | ", ", ")  # no "|" inside a markdown cell
            print(f"| {label} | {_ms(f)} | {_ms(r)} | {_ms(p)} | {_ratio(r, f)} | {_ratio(p, f)} |")
        print()

    if other:
        print("### Other benchmarks (best round)")
        print()
        print("| device | benchmark | variant | ms | data |")
        print("|---|---|---|---:|---|")
        for device, group, variant, best, src in other:
            label = group.replace(" | ", ": ")
            print(f"| {device} | {label} | {variant} | {_ms(best)} | {src} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/ops.json")
