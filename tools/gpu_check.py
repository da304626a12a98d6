"""GPU verification in one command: build, test, time and run dgm_ext on CUDA; one report.

    python3 tools/gpu_check.py [--build] [--data DIR] [--out DIR] [--quick] [--budget S]
                               [--only STEP,...] [--skip STEP,...] [--list]

Every step is a subprocess with its own time limit, run in a work folder outside the source
tree (the source ``dgm_ext/`` would shadow an installed package), and is recorded as passed,
failed (with the tail of its output) or skipped (with the reason). A global time budget
(``--budget``; 450 s with a GPU, 270 s without, 150 s with ``--quick``) skips what no longer
fits ("not run: time budget"). The tool then writes ``report.md``, ``report.json`` (the
device, torch, CUDA, ``dgm_ext.build_info()``, every step's numbers) and ``steps.log`` (every
step's output) to ``--out`` and prints the Markdown. Exit status 0 when every step that ran
passed.

Steps, in order (``--list``):

========================  =========================================================
build                     ``pip install --no-build-isolation --no-deps .`` with
                          ``DGM_EXT_CUDA=ON``, ``DGM_EXT_CUDA_ARCHS=90`` (``--build`` only)
env                       torch, CUDA, the GPU, ``build_info()``; one op per device
                          against its reference (always runs: it finds the GPU)
tests                     the test suite from a copy of ``tests/``, ``-n`` workers
                          (pytest-xdist); in the background, beside the next five steps
vae-flow, gan, realnvp    ``dgm-ext reproduce <exp> --quick --device cuda``; each run
                          must have trained on the device asked for
planar                    a planar flow (K = 32) fitted on the GPU; log-density and
                          gradients against the CPU; inverse round trip
metrics                   classifier features, FID, KID, IS on the GPU against the CPU
bandwidth                 the device's copy bandwidth (read + write of 1 GiB)
bench-ops                 ``benchmarks/bench_ops.py``, forward + backward at the SPEC
                          sizes: × eager, × torch.compile, % of the copy bandwidth
vae-epoch[-compiled|      two vae-elbo epochs in the Trainer: eager, ``compile_step=True``,
-cudagraphs]              ``compile_mode="reduce-overhead"``
========================  =========================================================

The last five steps time things: they start only after the background tests have ended.
The suite puts itself on CUDA: ``tests/_helpers.py`` adds ``"cuda"`` to its device axis and
the Trainer and the CLI default to CUDA when torch sees a GPU (there is no switch to pass;
``torch.set_default_device`` is not used, the tests build their CPU references explicitly).

Without a GPU the CPU part runs (env, a small test selection, vae-flow, the copy bandwidth,
a benchmark smoke run at tiny sizes, a vae-elbo mini-epoch eager and compiled) and the
report's first line says that no GPU was found. ``--quick`` makes it smaller still (about a
minute on 2 cores).

On this workplace's GPU machine (the device tool's ``run``; ../shared does not travel).
Once, here, in the repository root::

    mkdir -p .gpu-data && cp -r ../shared/data/mnist ../shared/data/fashion-mnist .gpu-data/
    grep -qx /.gpu-data/ .git/info/exclude || echo /.gpu-data/ >> .git/info/exclude

Then one call, ``carry=[".gpu-data"]``, ``timeout_s=540``::

    bash tools/gpu_check.sh --build --data .gpu-data --out $OUT/gpu-check

The tool stops itself at 450 s; of the 15 device minutes, the rest covers the machine's start
and one rerun of what failed or was cut, e.g. ``--only tests --budget 200`` (add ``--build``
when the machine was given back in between: a fresh one is bare). Only ``report.md``,
``report.json``, ``steps.log``, ``bench-ops.json`` and ``tests-junit.xml`` go to ``--out``;
the work folder (``--work``, default a new temporary folder) holds the rest.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "GPU_CHECK_RESULT "  # a worker's last stdout line: this prefix, then JSON
TAIL_LINES, TAIL_CHARS = 60, 4000  # of a failed step's output, kept in the report
LOG_CHARS = 2_000_000  # of each step's output, kept in steps.log
GRACE_S = 15.0  # after SIGINT at a time limit (pytest then writes its reports), before SIGKILL
REPORT_RESERVE_S = 5.0  # of the budget, kept for writing the report
# what the tests and benchmarks read besides the package (tools/: tests/test_gpu_check.py)
SOURCE_COPY = ("tests", "benchmarks", "tools", "csrc", "CMakeLists.txt", "pyproject.toml")

# Per profile: "gpu" (torch sees a GPU), "cpu" (it does not), "quick" (--quick, CI).
# quiet_reserve: seconds of the budget that the background tests leave to the timed steps.
PROFILES: dict[str, dict[str, Any]] = {
    "gpu": {
        "budget": 450.0, "quiet_reserve": 210.0,
        "tests": ["tests"],
        "bench_k": "cuda and fwd_bwd and not step and not GAN", "bench_quick": False,
        "vae_images": 50_000, "planar_steps": 1000, "metrics_n": 2000,
    },
    "cpu": {
        "budget": 270.0, "quiet_reserve": 150.0,
        "tests": ["tests/test_build.py", "tests/test_ops_kl.py", "tests/test_train_compiled.py"],
        "bench_k": "cpu and fwd_bwd and (bernoulli or kl_normal_std or coupling) and not step "
                   "and not GAN",
        "bench_quick": True,
        "vae_images": 2048, "planar_steps": 300, "metrics_n": 500,
    },
    "quick": {
        "budget": 150.0, "quiet_reserve": 90.0,
        "tests": ["tests/test_build.py", "-k", "standard or stamp"],
        "bench_k": "cpu and fwd_bwd and kl_normal_std and not step", "bench_quick": True,
        "vae_images": 512, "planar_steps": 100, "metrics_n": 200,
    },
}  # fmt: skip


# ----------------------------------------------------------------------------- types
class Skip(Exception):
    """Raised when a step is not started; the message is the reason."""


@dataclass
class StepResult:
    """What one step did: ``status`` is "passed", "failed" or "skipped"."""

    name: str
    what: str
    status: str
    reason: str = ""  # why it was skipped, or why it failed
    seconds: float = 0.0
    returncode: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    tail: str = ""  # the end of a failed step's output
    command: list[str] = field(default_factory=list)


@dataclass
class Cmd:
    """A subprocess: argv, folder, extra environment, and files it writes (for collect)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One row of the step table.

    ``command(ctx)`` returns the :class:`Cmd` to run or raises :class:`Skip`;
    ``collect(ctx, cmd, output)`` turns what the process left behind into the step's data,
    where a non-empty ``"problems"`` list fails the step even at exit status 0;
    ``summary(data)`` is the report's one-line result. ``cap_s`` limits the run, ``min_s``
    is the least time worth starting it with. A ``background`` step runs beside the steps
    after it; a ``quiet`` step (it times something) first waits until no background step runs.
    """

    name: str
    what: str
    command: Callable[[Ctx], Cmd]
    collect: Callable[[Ctx, Cmd, str], dict[str, Any]]
    summary: Callable[[dict[str, Any]], str] = lambda d: ""
    cap_s: float = 120.0
    min_s: float = 20.0
    gpu_only: bool = False
    background: bool = False
    quiet: bool = False


class Budget:
    """The global deadline, ``total`` seconds after creation (``clock`` for tests)."""

    def __init__(self, total: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.clock, self.start = float(total), clock, clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left for steps (the report's reserve excluded)."""
        return self.total - self.elapsed() - REPORT_RESERVE_S

    def timeout_for(self, step: Step, reserve: float = 0.0) -> float:
        """The step's time limit: its cap, or what is left less ``reserve`` (kept for later
        steps) if that is less. Raises :class:`Skip` when less than its minimum is left."""
        left = self.left() - reserve
        if left < step.min_s:
            raise Skip(
                f"not run: time budget ({max(left, 0.0):.0f} s of {self.total:.0f} s left, "
                f"the step needs at least {step.min_s:.0f} s)"
            )
        return min(step.cap_s, left)


@dataclass
class Ctx:
    """What the steps share; ``env`` holds the env step's findings once it has run."""

    out: Path
    work: Path
    quick: bool = False
    build: bool = False
    data: Path | None = None
    workers: int | None = None
    pytest_args: list[str] | None = None
    env: dict[str, Any] = field(default_factory=dict)
    results: dict[str, StepResult] = field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        return bool(self.env.get("cuda_available"))

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    @property
    def profile(self) -> dict[str, Any]:
        return PROFILES["quick" if self.quick else ("gpu" if self.gpu else "cpu")]

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            MPLBACKEND="Agg",
            DGM_EXT_NO_DOWNLOAD="1",  # nothing is fetched: a missing file is an error
            DGM_EXT_CACHE=str(self.work / "cache"),  # the MNIST classifier, shared by steps
        )
        if self.data is not None:
            env["DGM_EXT_DATA"] = str(self.data)
        return env

    def src(self) -> Path:
        """A copy of tests/, benchmarks/ and the files they read, outside the source tree."""
        dst = self.work / "src"
        if not dst.exists():
            dst.mkdir(parents=True)
            for name in SOURCE_COPY:
                if (REPO / name).is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", ".benchmarks")
                    shutil.copytree(REPO / name, dst / name, ignore=ignore)
                elif (REPO / name).exists():
                    shutil.copy2(REPO / name, dst / name)
        return dst


# ----------------------------------------------------------------------------- workers
# Run as `python gpu_check.py --worker NAME JSON` in the work folder, so that they import the
# installed dgm_ext; each prints RESULT_PREFIX + JSON last ("problems": failed checks).


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def work_env() -> dict[str, Any]:
    """Versions, the GPU, build_info(), pytest plugins, the data; one op on each device."""
    import importlib.util

    import torch

    import dgm_ext
    from dgm_ext import ops
    from dgm_ext.data import find_mnist_files
    from dgm_ext.ops import reference

    info = dgm_ext.build_info()
    cuda = torch.cuda.is_available()
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": cuda,
        "dgm_ext_file": dgm_ext.__file__,
        "build_info": info,
        "cpu_count": os.cpu_count(),
        "plugins": {
            name: importlib.util.find_spec(name) is not None
            for name in ("xdist", "pytest_timeout", "pytest_benchmark")
        },
        "data": {},
    }
    problems = []
    if cuda:
        props = torch.cuda.get_device_properties(0)
        out.update(
            device_name=torch.cuda.get_device_name(0),
            device_count=torch.cuda.device_count(),
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
        if not info.get("cuda"):
            problems.append("torch sees a GPU but dgm_ext has no CUDA kernels (use --build)")
    for name in ("mnist", "fashion-mnist"):
        try:
            find_mnist_files(fashion=name == "fashion-mnist", download=False)
            out["data"][name] = "found"
        except Exception as exc:  # reported; the steps that need the data fail on their own
            out["data"][name] = str(exc).splitlines()[0]
    for device in ["cpu"] + (["cuda"] if cuda and info.get("cuda") else []):
        torch.manual_seed(0)
        logits, x = torch.randn(64, 784), torch.bernoulli(torch.rand(64, 784))
        got = ops.bernoulli_log_prob(logits.to(device), x.to(device)).cpu()
        want = reference.bernoulli_log_prob(logits.double(), x.double()).float()
        if not torch.allclose(got, want, rtol=1e-5, atol=1e-4):
            problems.append(f"bernoulli_log_prob on {device} differs from the reference")
    return {**out, "problems": problems}


def work_bandwidth(device: str, mib: int, reps: int) -> dict[str, Any]:
    """Copy bandwidth, bytes read + written per second: a ``mib`` MiB float32 tensor copied
    ``reps`` times (CUDA events on a GPU), median."""
    import torch

    n = mib * 2**20 // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    _sync(device)
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    problems = [] if torch.equal(dst, src) else ["the copy differs from its source"]
    return {"device": device, "mib": mib, "reps": reps, "median_s": t,
            "gbs": 2 * 4 * n / t / 1e9, "problems": problems}  # fmt: skip


def work_vae_epoch(device: str, mode: str, images: int, run_dir: str) -> dict[str, Any]:
    """Two epochs of the vae-elbo model (batch 64, Adam 3e-4, full batches only) in the
    Trainer; ``mode``: "eager", "compiled" (``compile_step``) or "cudagraphs" (and
    ``compile_mode="reduce-overhead"``). Epoch 1 includes the compilation."""
    import torch

    from dgm_ext.data import load_mnist
    from dgm_ext.experiments.vae_elbo import MODEL
    from dgm_ext.train import Trainer, TrainerConfig
    from dgm_ext.vae import build_vae

    train = load_mnist("train", "static", download=False)
    if images < len(train):
        train = type(train)(train.images[:images], train.labels[:images], train.variant)
    torch.manual_seed(0)
    model = build_vae(**MODEL)
    config = TrainerConfig(
        run_dir=run_dir, epochs=2, batch_size=64, lr=3e-4, progress=False, device=device,
        resume=False, drop_last=True,  # one batch shape: no recompilation for a short batch
        compile_step=mode != "eager",
        compile_mode="reduce-overhead" if mode == "cudagraphs" else None,
    )  # fmt: skip
    rows = Trainer(model, config).fit(train)
    losses = [float(r["train_loss"]) for r in rows]
    used = str(next(model.parameters()).device)
    problems = [] if all(map(math.isfinite, losses)) else [f"non-finite loss: {losses}"]
    if not used.startswith(device):
        problems.append(f"trained on {used}, not {device}")
    return {"mode": mode, "device": used, "images": len(train), "steps_per_epoch":
            len(train) // 64, "epoch_s": [float(r["time_s"]) for r in rows],
            "train_loss": losses, "problems": problems}  # fmt: skip


def work_planar(device: str, steps: int) -> dict[str, Any]:
    """Fit a 32-layer planar flow by maximum likelihood on arcs samples on ``device``; compare
    its log-density and gradients with the same flow on the CPU; invert it; sample."""
    import torch

    from dgm_ext.flows import PlanarFlow, get_density

    torch.manual_seed(0)
    flow = PlanarFlow(dim=2, length=32).to(device)
    opt = torch.optim.RMSprop(flow.parameters(), lr=5e-4)
    g = torch.Generator().manual_seed(1)
    arcs = get_density("arcs")
    data = arcs.sample(steps * 128, g).float()
    losses = []
    t0 = time.perf_counter()
    for i in range(steps):
        loss = -flow.log_prob(data[i * 128 : (i + 1) * 128].to(device)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    _sync(device)
    seconds = time.perf_counter() - t0
    curve = torch.stack(losses).cpu()
    held = arcs.sample(4096, g).float()
    cpu_flow = PlanarFlow(dim=2, length=32)
    cpu_flow.load_state_dict({k: v.cpu() for k, v in flow.state_dict().items()})
    flow.zero_grad(set_to_none=True)  # drop the last training step's gradients
    lp_dev, lp_cpu = flow.log_prob(held.to(device)), cpu_flow.log_prob(held)
    (-lp_dev.mean()).backward()
    (-lp_cpu.mean()).backward()
    grad_diff = max(
        float((a.grad.cpu() - b.grad).abs().max() / (b.grad.abs().max() + 1e-12))
        for a, b in zip(flow.parameters(), cpu_flow.parameters(), strict=True)
    )
    with torch.no_grad():
        z, _ = flow(held.to(device))
        back, _ = flow.inverse(z)
        samples = flow.sample(1000)
    tenth = max(1, steps // 10)
    out = {
        "device": device, "steps": steps, "seconds": seconds,
        "loss_first": float(curve[:tenth].mean()), "loss_last": float(curve[-tenth:].mean()),
        "log_prob_max_abs_diff": float((lp_dev.detach().cpu() - lp_cpu.detach()).abs().max()),
        "grad_max_rel_diff": grad_diff,
        "inverse_max_abs_err": float((back.cpu() - held).abs().max()),
    }  # fmt: skip
    problems = []
    if not (torch.isfinite(curve).all() and torch.isfinite(samples).all()):
        problems.append("non-finite losses or samples")
    if not out["loss_last"] < out["loss_first"]:
        problems.append(f"the NLL did not go down ({out['loss_first']} -> {out['loss_last']})")
    for key, limit in (("log_prob_max_abs_diff", 1e-3), ("grad_max_rel_diff", 1e-3),
                       ("inverse_max_abs_err", 1e-3)):  # fmt: skip
        if not out[key] <= limit:
            problems.append(f"{key} {out[key]:.2e} > {limit}")
    return {**out, "problems": problems}


def work_metrics(device: str, n: int) -> dict[str, Any]:
    """FID, KID and IS of ``n`` training against ``n`` test images in the feature space of
    the (quick) MNIST classifier, the network on ``device`` and on the CPU."""
    import copy

    from dgm_ext.data import load_mnist
    from dgm_ext.experiments.gan_mnist import QUICK_CLASSIFIER
    from dgm_ext.metrics import (
        frechet_distance,
        inception_score,
        kernel_inception_distance,
        mnist_feature_net,
    )
    from dgm_ext.metrics.mnist_net import class_probs, features

    net = mnist_feature_net("mnist", train_config=QUICK_CLASSIFIER, device=device)
    nets = {"on_device": net, "on_cpu": copy.deepcopy(net).cpu()}
    a = load_mnist("train", "grey", download=False).images[:n]
    b = load_mnist("test", "grey", download=False).images[:n]
    out: dict[str, Any] = {"device": device, "n": n}
    feats = {}
    for where, m in nets.items():
        t0 = time.perf_counter()
        fa, fb, pa = features(m, a), features(m, b), class_probs(m, a)
        out[f"features_s_{where}"] = time.perf_counter() - t0
        out[where] = {
            "fid": frechet_distance(fa, fb),
            "kid": kernel_inception_distance(fa, fb, subsets=20, subset_size=min(n, 200))[0],
            "is": inception_score(pa, splits=5)[0],
        }
        feats[where] = fa
    out["feature_max_abs_diff"] = float((feats["on_device"] - feats["on_cpu"]).abs().max())
    # 1e-2: cuDNN convolutions may use TF32 on the GPU
    problems = [
        f"{k} {out['on_device'][k]:.6g} on {device} vs {out['on_cpu'][k]:.6g} on the CPU"
        for k in ("fid", "kid", "is")
        if not abs(out["on_device"][k] - out["on_cpu"][k]) <= 1e-2 * max(1, abs(out["on_cpu"][k]))
    ]
    return {**out, "problems": problems}


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "env": work_env,
    "bandwidth": work_bandwidth,
    "vae-epoch": work_vae_epoch,
    "planar": work_planar,
    "metrics": work_metrics,
}


def worker_main(name: str, kwargs_json: str) -> int:
    data = WORKERS[name](**json.loads(kwargs_json))
    print(RESULT_PREFIX + json.dumps(data, default=str), flush=True)
    return 0


# ----------------------------------------------------------------------------- step kinds
def worker(name: str, **kwargs: Any) -> Callable[[Ctx], Cmd]:
    """The command of a worker step; callable keyword values are called with the ctx."""

    def command(ctx: Ctx) -> Cmd:
        args = {k: (v(ctx) if callable(v) else v) for k, v in kwargs.items()}
        return Cmd([sys.executable, str(Path(__file__).resolve()), "--worker", name,
                    json.dumps(args)], ctx.work)  # fmt: skip

    return command


def collect_worker(ctx: Ctx, cmd: Cmd, output: str) -> dict[str, Any]:
    lines = [ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        return {"problems": ["the worker printed no result"]}
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def reproduce(exp: str) -> Callable[[Ctx], Cmd]:
    """The command of ``dgm-ext reproduce EXP --quick`` on the device, into the work folder."""

    def command(ctx: Ctx) -> Cmd:
        run = ctx.work / "runs" / exp
        argv = [sys.executable, "-m", "dgm_ext", "reproduce", exp, "--quick", "--fresh",
                "--no-progress", "--device", ctx.device, "--out", str(run)]  # fmt: skip
        return Cmd(argv, ctx.work, files={"run": run})

    return command


def collect_reproduce(ctx: Ctx, cmd: Cmd, output: str) -> dict[str, Any]:
    """The run's wall time and the devices its Trainers used (each Trainer's config.json
    names its device); a device other than the one asked for is a problem."""
    run = cmd.files["run"]
    results = json.loads((run / "results.json").read_text())
    configs = [json.loads(p.read_text()) for p in run.rglob("config.json")]
    devices = sorted({c["device"] for c in configs if "world_size" in c and "device" in c})
    problems = [
        f"trained on {d}, not {ctx.device}" for d in devices if not d.startswith(ctx.device)
    ]
    if not devices:
        problems.append("no Trainer config.json: the device it trained on is unknown")
    return {"wall_time_s": results.get("wall_time_s"), "devices": devices,
            "results": str(run / "results.md"), "problems": problems}  # fmt: skip


def pytest_cmd(ctx: Ctx, args: list[str], junit: Path, workers: int = 0) -> Cmd:
    """pytest in the source copy, with a JUnit report; ``workers`` > 1: pytest-xdist (one
    thread each, so that the steps running beside it keep some cores)."""
    argv = [sys.executable, "-m", "pytest", *args, "-q", "-rfE", "-p", "no:randomly",
            "-p", "no:cacheprovider", f"--junitxml={junit}"]  # fmt: skip
    env = {}
    if workers > 1 and ctx.env.get("plugins", {}).get("xdist"):
        argv += ["-n", str(workers)]
        env = {"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    return Cmd(argv, ctx.src(), env, files={"junit": junit})


def tests_command(ctx: Ctx) -> Cmd:
    args = ctx.pytest_args if ctx.pytest_args is not None else ctx.profile["tests"]
    workers = ctx.workers
    if workers is None:
        workers = min(8, (ctx.env.get("cpu_count") or 2) // 2) if ctx.gpu else 0
    cmd = pytest_cmd(ctx, [*args, "--durations=10"], ctx.work / "tests-junit.xml", workers)
    if ctx.gpu and ctx.env.get("plugins", {}).get("pytest_timeout"):
        cmd.argv.append("--timeout=240")  # a hung CUDA test must not hold the whole step
    if all(v == "found" for v in ctx.env.get("data", {}).values()):
        cmd.env["DGM_EXT_REQUIRE_DATA"] = "1"  # the data is there: a data skip is a failure
    return cmd


def junit_counts(path: Path) -> dict[str, Any]:
    """Outcome counts of a JUnit XML file, the same for the tests whose id names CUDA, and
    the failed test ids."""
    counts = dict.fromkeys(("passed", "failed", "skipped", "cuda_passed", "cuda_failed",
                            "cuda_skipped"), 0)  # fmt: skip
    failed = []
    for case in ET.parse(path).getroot().iter("testcase"):
        tid = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
            failed.append(tid)
        else:
            outcome = "skipped" if case.find("skipped") is not None else "passed"
        counts[outcome] += 1
        if "cuda" in tid.lower():
            counts[f"cuda_{outcome}"] += 1
    return {**counts, "failed_tests": failed}


def collect_tests(ctx: Ctx, cmd: Cmd, output: str) -> dict[str, Any]:
    data = junit_counts(cmd.files["junit"])
    problems = [f"{data['failed']} test(s) failed"] if data["failed"] else []
    if data["passed"] + data["failed"] == 0:
        problems.append("no test ran")
    last = re.findall(r"^=* ?(\d+ (?:passed|failed|skipped|error).* in [0-9.]+s\b.*?) ?=*$",
                      output, re.M)  # fmt: skip
    return {**data, "pytest_summary": last[-1] if last else "", "problems": problems}


def bench_command(ctx: Ctx) -> Cmd:
    if not ctx.env.get("plugins", {}).get("pytest_benchmark"):
        raise Skip("pytest-benchmark is not installed")
    out = ctx.work / "bench-ops.json"
    args = ["benchmarks/bench_ops.py", "-k", ctx.profile["bench_k"], f"--benchmark-json={out}"]
    cmd = pytest_cmd(ctx, args, ctx.work / "bench-junit.xml")
    cmd.env["DGM_EXT_BENCH_QUICK"] = "1" if ctx.profile["bench_quick"] else "0"
    cmd.files["bench"] = out
    return cmd


def bench_rows(bench: dict[str, Any], copy_gbs: float | None) -> list[dict[str, Any]]:
    """One row per (case, mode, device) of a bench_ops.py JSON: each provider's median seconds
    per call, dgm_ext × eager and × compile (baseline time / dgm_ext's: > 1 is faster),
    dgm_ext's GB/s (the case's minimal bytes / its time) and that as % of ``copy_gbs``."""
    table: dict[tuple[str, str, str], dict[str, Any]] = {}
    for b in bench.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "case" not in info or info.get("provider") == "copy":
            continue
        key = (info["case"], info["mode"], info.get("device", "cpu"))
        row = table.setdefault(key, {"case": key[0], "mode": key[1], "device": key[2],
                                     "floor_bytes": info.get("floor_bytes")})  # fmt: skip
        row[info["provider"]] = b["stats"]["median"] / (info.get("calls_per_round") or 1)
    for row in table.values():
        d, e, c = row.get("dgm_ext"), row.get("eager"), row.get("compile")
        row["x_eager"] = e / d if d and e else None
        row["x_compile"] = c / d if d and c else None
        row["gbs"] = row["floor_bytes"] / d / 1e9 if d and row["floor_bytes"] else None
        row["pct_copy"] = 100 * row["gbs"] / copy_gbs if row["gbs"] and copy_gbs else None
    return list(table.values())


def collect_bench(ctx: Ctx, cmd: Cmd, output: str) -> dict[str, Any]:
    bw = ctx.results.get("bandwidth")
    copy_gbs = bw.data.get("gbs") if bw is not None and bw.status == "passed" else None
    rows = bench_rows(json.loads(cmd.files["bench"].read_text()), copy_gbs)
    problems = [] if rows else ["no benchmark ran"]
    problems += [f"{r['case']}: a provider did not run" for r in rows if r["x_compile"] is None]
    sizes = "tiny sizes (DGM_EXT_BENCH_QUICK=1; timings mean nothing)"
    return {"rows": rows, "copy_gbs": copy_gbs, "problems": problems,
            "sizes": sizes if ctx.profile["bench_quick"] else "SPEC §4 sizes"}  # fmt: skip


def build_command(ctx: Ctx) -> Cmd:
    if not ctx.build:
        raise Skip("not asked for (--build)")
    env = {"DGM_EXT_CUDA": os.environ.get("DGM_EXT_CUDA", "ON"),
           "DGM_EXT_CUDA_ARCHS": os.environ.get("DGM_EXT_CUDA_ARCHS", "90"),
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}  # fmt: skip
    argv = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "."]
    return Cmd(argv, REPO, env)


# ----------------------------------------------------------------------------- the steps
def _f(x: Any, fmt: str = ".3g") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "–"


def summary_tests(d: dict[str, Any]) -> str:
    return (f"{d.get('passed', 0)} passed, {d.get('failed', 0)} failed, {d.get('skipped', 0)} "
            f"skipped; of them with CUDA in the id: {d.get('cuda_passed', 0)} passed, "
            f"{d.get('cuda_failed', 0)} failed")  # fmt: skip


def experiment(name: str, exp: str, what: str, **kw: Any) -> Step:
    return Step(
        name, f"reproduce {exp} --quick{what}", reproduce(exp), collect_reproduce,
        lambda d: f"{_f(d.get('wall_time_s'), '.1f')} s, trained on {', '.join(d['devices'])}",
        **kw,
    )  # fmt: skip


def vae_epoch(name: str, mode: str, what: str, **kw: Any) -> Step:
    def summary(d: dict[str, Any]) -> str:
        e = [*d["epoch_s"], None]
        return f"{d['images']} images; epoch 1 {_f(e[0])} s, epoch 2 {_f(e[1])} s"

    command = worker("vae-epoch", device=lambda c: c.device, mode=mode,
                     images=lambda c: c.profile["vae_images"],
                     run_dir=lambda c: str(c.work / f"vae-{mode}"))  # fmt: skip
    return Step(name, what, command, collect_worker, summary, quiet=True, **kw)


STEPS: list[Step] = [
    Step("build", "pip install . with the CUDA kernels (sm_90)", build_command,
         lambda ctx, cmd, out: {}, cap_s=300, min_s=60),
    Step("env", "torch, CUDA, GPU, build_info(); one op per device", worker("env"),
         collect_worker, lambda d: f"{d.get('device_name') or 'no GPU'}; torch {d['torch']}; "
         f"dgm_ext CUDA kernels {d['build_info'].get('cuda')}", cap_s=90, min_s=10),
    Step("tests", "the test suite from a copy of tests/ (CUDA axis when there is a GPU)",
         tests_command, collect_tests, summary_tests, cap_s=420, min_s=45, background=True),
    experiment("vae-flow", "vae-flow", " (planar_flow_rows posterior)"),
    experiment("gan", "gan-mnist", " (FID/KID over training)", gpu_only=True),
    experiment("realnvp", "realnvp-mnist", "", gpu_only=True),
    Step("planar", "planar flow K=32 fitted on the device; log p, gradients vs the CPU",
         worker("planar", device=lambda c: c.device, steps=lambda c: c.profile["planar_steps"]),
         collect_worker, lambda d: f"{d['steps']} steps in {_f(d['seconds'], '.1f')} s, NLL "
         f"{_f(d['loss_first'])} -> {_f(d['loss_last'])}", cap_s=90, min_s=15, gpu_only=True),
    Step("metrics", "FID/KID/IS from classifier features on the device vs the CPU",
         worker("metrics", device=lambda c: c.device, n=lambda c: c.profile["metrics_n"]),
         collect_worker, lambda d: f"FID {_f(d['on_device']['fid'])}; features within "
         f"{_f(d['feature_max_abs_diff'], '.1e')} of the CPU's", gpu_only=True),
    Step("bandwidth", "copy bandwidth of the device (bytes read + written)",
         worker("bandwidth", device=lambda c: c.device, mib=lambda c: 1024 if c.gpu else 64,
                reps=lambda c: 20 if c.gpu else 5),
         collect_worker, lambda d: f"{_f(d['gbs'], '.1f')} GB/s ({d['device']})",
         cap_s=60, min_s=10, quiet=True),
    Step("bench-ops", "op benchmarks: × eager, × torch.compile, % of copy bandwidth",
         bench_command, collect_bench, lambda d: f"{len(d['rows'])} cases, {d['sizes']}",
         cap_s=200, min_s=30, quiet=True),
    vae_epoch("vae-epoch", "eager", "vae-elbo epochs in the Trainer, eager", cap_s=90, min_s=15),
    vae_epoch("vae-epoch-compiled", "compiled", "the same, compile_step=True", cap_s=180,
              min_s=30),
    vae_epoch("vae-epoch-cudagraphs", "cudagraphs", "the same, compile_mode='reduce-overhead'",
              cap_s=180, min_s=30, gpu_only=True),
]  # fmt: skip


# ----------------------------------------------------------------------------- running
@dataclass
class Running:
    """A started step: its process writes to ``log`` and is stopped at ``deadline``."""

    step: Step
    cmd: Cmd
    proc: subprocess.Popen
    log: Path
    started: float
    deadline: float


def start(
    step: Step, ctx: Ctx, budget: Budget, chosen: Callable[[str], bool], reserve: float = 0.0
) -> Running:
    """Start ``step``'s process, leaving ``reserve`` seconds of the budget to the steps after
    it; raises :class:`Skip` with the reason it does not run."""
    if not chosen(step.name):
        raise Skip("not selected (--only / --skip)")
    if step.name not in ("build", "env") and not ctx.env:
        raise Skip("not run: the env step did not report (torch or dgm_ext does not import)")
    if step.gpu_only and not ctx.gpu:
        raise Skip("no GPU")
    timeout = budget.timeout_for(step, reserve)
    cmd = step.command(ctx)
    log = ctx.work / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{budget.elapsed():4.0f} s] {step.name}: {shlex.join(cmd.argv)}", flush=True)
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd.argv, cwd=cmd.cwd, env={**ctx.environ(), **cmd.env},
                                stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    now = time.monotonic()
    return Running(step, cmd, proc, log, now, now + timeout)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the step's process group (pytest then still writes its reports); SIGKILL
    if it has not ended ``GRACE_S`` later."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=GRACE_S)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def judge(returncode: int | None, timed_out: bool, data: dict[str, Any]) -> str:
    """Why the step failed ("" if it passed): its time limit, its exit status, and the
    problems its collector found (a step that exits 0 with problems has failed)."""
    reasons = list(data.get("problems", []))
    if returncode != 0:
        reasons.insert(0, f"exit status {returncode}")
    if timed_out:
        reasons.insert(0, "stopped at its time limit")
    return "; ".join(reasons)


def finish(run: Running, ctx: Ctx) -> StepResult:
    """Wait for a started step until its deadline, collect its results and judge it."""
    timed_out = False
    try:
        run.proc.wait(timeout=max(0.0, run.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(run.proc)
    seconds = time.monotonic() - run.started
    output = run.log.read_text(errors="replace")
    try:
        data = run.step.collect(ctx, run.cmd, output)
    except Exception as exc:  # a missing or unreadable result fails the step, visibly
        data = {"problems": [f"no readable results ({type(exc).__name__}: {exc})"]}
    reason = judge(run.proc.returncode, timed_out, data)
    status = "failed" if reason else "passed"
    return StepResult(run.step.name, run.step.what, status, reason, round(seconds, 1),
                      run.proc.returncode, data, tail(output) if reason else "",
                      run.cmd.argv)  # fmt: skip


def tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text``, at most ``chars`` characters."""
    return "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]


def run_steps(
    ctx: Ctx, steps: list[Step], budget: Budget, chosen: Callable[[str], bool]
) -> list[StepResult]:
    """Run ``steps`` in order; background ones overlap the steps after them up to the next
    quiet step."""
    background: list[Running] = []

    def record(r: StepResult) -> None:
        ctx.results[r.name] = r
        if r.name == "env" and r.returncode == 0:
            ctx.env = r.data
        why = f": {r.reason}" if r.reason else ""
        print(f"[{budget.elapsed():4.0f} s] {r.name}: {r.status}{why}", flush=True)

    def runs(s: Step) -> bool:
        return chosen(s.name) and (ctx.gpu or not s.gpu_only)

    for i, step in enumerate([*steps, None]):  # None: the end, where background steps end
        if step is None or step.quiet:
            while background:
                record(finish(background.pop(0), ctx))
        if step is None:
            break
        quiet_later = any(s.quiet and runs(s) for s in steps[i + 1 :])
        reserve = ctx.profile["quiet_reserve"] if step.background and quiet_later else 0.0
        try:
            run = start(step, ctx, budget, chosen, reserve)
        except Skip as exc:
            record(StepResult(step.name, step.what, "skipped", str(exc)))
            continue
        if step.background:
            background.append(run)
        else:
            record(finish(run, ctx))
    return [ctx.results[s.name] for s in steps]


# ----------------------------------------------------------------------------- report
VAE_EPOCH_STEPS = ("vae-epoch", "vae-epoch-compiled", "vae-epoch-cudagraphs")
NOT_COVERED = (
    "Never covered by this tool: forward-only op timings and the training-size op cases on "
    "CUDA (`pytest benchmarks/bench_ops.py -k cuda`), the other benchmark files, multi-GPU "
    "DDP, the FID Inception-v3 network (no weights file travels), the full-size experiments."
)


def make_report(
    ctx: Ctx, results: list[StepResult], budget: Budget, argv: list[str]
) -> dict[str, Any]:
    """The report as a JSON-ready dict."""
    counts = {s: sum(r.status == s for r in results) for s in ("passed", "failed", "skipped")}
    env = ctx.env
    keys = ("device_name", "capability", "memory_gib", "multiprocessors", "device_count",
            "torch", "torch_cuda", "python", "cpu_count", "dgm_ext_file", "build_info")  # fmt: skip
    return {
        "tool": "tools/gpu_check.py",
        "command": argv,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "gpu_found": ctx.gpu,
        "profile": "quick" if ctx.quick else ("gpu" if ctx.gpu else "cpu"),
        "device": {k: env.get(k) for k in keys},
        "budget_s": budget.total,
        "elapsed_s": round(budget.elapsed(), 1),
        "work": str(ctx.work),
        "counts": counts,
        "ok": counts["failed"] == 0,
        "steps": [asdict(r) for r in results],
    }


def _ms(t: float | None) -> str:
    return "–" if t is None else f"{t * 1e3:.4g}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    """The report in Markdown: device, result, the step table, what was not done, then the
    benchmark, epoch and test tables and the tail of each failed step's output."""
    dev, c = report["device"], report["counts"]
    steps = {s["name"]: s for s in report["steps"]}
    summaries = {s.name: s.summary for s in STEPS}
    lines = ["# dgm_ext GPU check", ""]
    if report["gpu_found"]:
        lines.append(
            f"Device: **{dev['device_name']}** (compute capability {dev['capability']}, "
            f"{dev['memory_gib']} GiB, {dev['multiprocessors']} multiprocessors), torch "
            f"{dev['torch']}, CUDA {dev['torch_cuda']}, Python {dev['python']}, "
            f"{dev['cpu_count']} CPUs."
        )
    else:
        lines += [
            "**NO GPU FOUND: torch sees no CUDA device, so only the CPU part ran and nothing "
            "in this report verifies CUDA.**",
            "",
            f"torch {dev['torch']}, Python {dev['python']}, {dev['cpu_count']} CPUs.",
        ]
    lines += [
        "",
        f"`dgm_ext.build_info()`: `{json.dumps(dev['build_info'])}` ({dev['dgm_ext_file']})",
        "",
        f"Profile {report['profile']}; time budget {report['budget_s']:.0f} s, used "
        f"{report['elapsed_s']:.0f} s; {report['finished']}; `{shlex.join(report['command'])}`",
        "",
        f"**Result: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped** "
        f"(exit status {0 if report['ok'] else 1})",
        "",
        "| step | what | status | s | result |",
        "|---|---|---|---:|---|",
    ]
    for s in report["steps"]:
        result = s["reason"]
        if s["status"] == "passed":
            try:
                result = summaries[s["name"]](s["data"])
            except Exception:  # a summary must not break the report; the JSON has the data
                result = "(see report.json)"
        status = "**FAILED**" if s["status"] == "failed" else s["status"]
        lines.append(f"| {s['name']} | {_cell(s['what'])} | {status} | {s['seconds']:.0f} "
                     f"| {_cell(result)} |")  # fmt: skip
    lines += ["", "## Not done", ""]
    lines += [f"- {s['name']}: {s['reason']}" for s in report["steps"] if s["status"] == "skipped"]
    lines += [f"- {NOT_COVERED}", ""]

    bench = steps.get("bench-ops", {}).get("data", {})
    if bench.get("rows"):
        bw = bench["copy_gbs"]
        lines += [
            f"## Op benchmarks: {bench['sizes']}; median per call; copy bandwidth "
            + (f"{bw:.1f} GB/s" if bw else "not measured"),
            "",
            "× = the baseline's time / dgm_ext's (> 1: dgm_ext is faster); GB/s = the case's "
            "minimal bytes (`cases.floor_bytes`) / dgm_ext's time; % = of the copy bandwidth.",
            "",
            "| op | mode | device | dgm_ext ms | eager ms | compile ms | × eager | × compile "
            "| dgm_ext GB/s | % copy |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {_cell(r['case'])} | {r['mode']} | {r['device']} | {_ms(r.get('dgm_ext'))} "
            f"| {_ms(r.get('eager'))} | {_ms(r.get('compile'))} | {_f(r['x_eager'], '.2f')} "
            f"| {_f(r['x_compile'], '.2f')} | {_f(r['gbs'], '.1f')} | {_f(r['pct_copy'], '.0f')} |"
            for r in bench["rows"]
        ]
        lines.append("")

    epoch_data = [steps.get(n, {}).get("data", {}) for n in VAE_EPOCH_STEPS]
    epochs = [d for d in epoch_data if d.get("epoch_s")]
    if epochs:
        eager = [*epoch_data[0].get("epoch_s", []), None, None]
        lines += [
            f"## vae-elbo epochs in the Trainer ({epochs[0]['images']} images, batch 64, "
            f"{epochs[0]['steps_per_epoch']} steps per epoch, {epochs[0]['device']})",
            "",
            "| variant | epoch 1 s (with compilation) | epoch 2 s | eager / this (epoch 2) |",
            "|---|---:|---:|---:|",
        ]
        for d in epochs:
            e = [*d["epoch_s"], None]
            ratio = eager[1] / e[1] if eager[1] and e[1] else None
            lines.append(f"| {d['mode']} | {_f(e[0], '.2f')} | {_f(e[1], '.2f')} "
                         f"| {_f(ratio, '.2f')} |")  # fmt: skip
        lines.append("")

    tests = steps.get("tests", {}).get("data", {})
    if "passed" in tests:
        lines += ["## Tests", "", f"{summary_tests(tests)}. {tests['pytest_summary']}", ""]
        lines += [f"- FAILED {t}" for t in tests["failed_tests"][:40]]
        lines.append("")

    failed = [s for s in report["steps"] if s["status"] == "failed"]
    if failed:
        lines += ["## Failures", ""]
        for s in failed:
            lines += [f"### {s['name']}: {s['reason']}", "", "```",
                      tail(s["tail"], 25, 2500), "```", ""]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict[str, Any], out: Path) -> str:
    """Write ``report.json`` and ``report.md`` into ``out``; return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = render_markdown(report)
    (out / "report.md").write_text(md)
    return md


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", type=Path, default=None, help="report folder (default ./gpu-check-<time>)"
    )
    p.add_argument(
        "--work",
        type=Path,
        default=None,
        help="folder for the source copy, runs and logs (default: a new temporary one)",
    )
    p.add_argument("--build", action="store_true", help="first pip install . with CUDA kernels")
    p.add_argument("--quick", action="store_true", help="smallest sizes (CI)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run")
    p.add_argument("--only", default=None, help="comma-separated steps to run (env always runs)")
    p.add_argument("--skip", default=None, help="comma-separated steps not to run")
    p.add_argument("--data", type=Path, default=None, help="data root (sets $DGM_EXT_DATA)")
    p.add_argument("--workers", type=int, default=None, help="pytest-xdist workers for tests")
    p.add_argument("--pytest-args", default=None, help="the tests step's pytest arguments")
    p.add_argument("--list", action="store_true", help="print the steps and exit")
    args = p.parse_args(argv)
    names = {s.name for s in STEPS}
    for opt in ("only", "skip"):
        value = getattr(args, opt)
        picked = set(value.split(",")) if value else None
        if picked and picked - names:
            p.error(f"--{opt}: unknown step(s) {sorted(picked - names)}; steps: {sorted(names)}")
        setattr(args, opt, picked)
    return args  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the checks; write and print the report; 0 when every step that ran passed."""
    args = parse_args(argv)
    if args.list:
        for s in STEPS:
            print(f"{s.name:21s} {'GPU only' if s.gpu_only else '':8s} {s.cap_s:4.0f} s  {s.what}")
        return 0
    out = (args.out or Path(f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = (args.work or Path(tempfile.mkdtemp(prefix="gpu-check-work-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(out, work, args.quick, args.build, args.data.resolve() if args.data else None,
              args.workers,
              shlex.split(args.pytest_args) if args.pytest_args is not None else None)  # fmt: skip

    def chosen(name: str) -> bool:
        only, skip = args.only, args.skip or set()
        return name == "env" or ((only is None or name in only) and name not in skip)

    # The profile (GPU or not) is known only once env has run: start with the largest budget
    # and narrow it to the profile's then, unless --budget set it.
    budget = Budget(args.budget or max(p["budget"] for p in PROFILES.values()))
    first = [s.name for s in STEPS].index("env") + 1
    results = run_steps(ctx, STEPS[:first], budget, chosen)
    if args.budget is None:
        budget.total = ctx.profile["budget"]
    results += run_steps(ctx, STEPS[first:], budget, chosen)

    command = [sys.executable, str(Path(__file__)), *(sys.argv[1:] if argv is None else argv)]
    report = make_report(ctx, results, budget, command)
    with open(out / "steps.log", "w") as log:
        for r in results:
            path = work / "logs" / f"{r.name}.log"
            if path.is_file():
                log.write(f"===== {r.name}: {r.status} {r.reason}\n")
                log.write(path.read_text(errors="replace")[-LOG_CHARS:] + "\n")
    for name in ("bench-ops.json", "tests-junit.xml"):
        if (work / name).is_file():
            shutil.copy2(work / name, out / name)
    print(write_report(report, out))
    print(f"report: {out / 'report.md'}, report.json, steps.log; work folder: {work}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
