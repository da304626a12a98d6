"""tools/gpu_check.py: the one-command GPU verification, tested on its CPU part.

- The tool itself, in a subprocess, in ``--quick`` mode with a tiny selection into a tmp
  folder: the report files, "no GPU" stated, every step's status (a step that fails must be
  reported failed and fail the run).
- The pieces without the heavy steps: the deadline, the judging of a step (exit status,
  time limit, problems found), the step runner with cheap commands, the report writer, the
  benchmark table and the JUnit counts, each against values written out here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


gc = _load()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _step(name: str, code: str, collect=None, **kw):
    """A step running ``python -c code`` in the work folder."""
    return gc.Step(
        name,
        f"test step {name}",
        lambda ctx: gc.Cmd([sys.executable, "-c", code], ctx.work),
        collect or (lambda ctx, cmd, out: {}),
        **kw,
    )


def _ctx(tmp_path: Path, **env) -> object:
    ctx = gc.Ctx(tmp_path / "out", tmp_path / "work", quick=True)
    ctx.env = {"cuda_available": False, **env}
    return ctx


# ----------------------------------------------------------------------------- the tool, run
def test_quick_cpu_run_reports_every_step_and_fails_on_a_failing_step(tmp_path):
    """--quick with three steps selected; the data root is an empty folder, so vae-epoch
    (which loads MNIST) fails while the others pass."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--quick", "--out", str(out), "--work",
         str(tmp_path / "work"), "--data", str(empty), "--only", "tests,bandwidth,vae-epoch",
         "--pytest-args", "tests/test_build.py -k standard"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert md in proc.stdout  # the Markdown is printed at the end
    assert {"command", "gpu_found", "profile", "device", "budget_s", "elapsed_s", "counts",
            "ok", "steps"} <= set(report)  # fmt: skip
    assert report["device"]["torch"] == torch.__version__
    assert report["device"]["build_info"]["torch_version"] == torch.__version__.split("+")[0]
    gpu = torch.cuda.is_available()
    assert report["gpu_found"] is gpu
    assert ("NO GPU FOUND" in md) is not gpu
    if not gpu:
        assert md.index("NO GPU FOUND") < md.index("| step |")  # said before the table
    assert report["profile"] == "quick" and report["budget_s"] == 150

    steps = {s["name"]: s for s in report["steps"]}
    assert [s["name"] for s in report["steps"]] == [s.name for s in gc.STEPS]
    status = {n: s["status"] for n, s in steps.items()}
    assert status["env"] == status["tests"] == status["bandwidth"] == "passed"
    assert status["vae-epoch"] == "failed"
    assert steps["vae-epoch"]["reason"].startswith("exit status 1")
    assert "mnist" in steps["vae-epoch"]["tail"].lower()  # the cause, from its output
    others = set(steps) - {"env", "tests", "bandwidth", "vae-epoch"}
    assert {steps[n]["status"] for n in others} == {"skipped"}
    assert {steps[n]["reason"] for n in others} == {"not selected (--only / --skip)"}
    assert report["counts"] == {"passed": 3, "failed": 1, "skipped": len(gc.STEPS) - 4}
    assert report["ok"] is False

    tests = steps["tests"]["data"]
    assert tests["passed"] == 1 and tests["failed"] == 0  # test_build's C++-standard test
    assert tests["failed_tests"] == []
    assert steps["bandwidth"]["data"]["gbs"] > 0
    assert steps["env"]["data"]["data"]["mnist"] != "found"
    assert "| vae-epoch | vae-elbo epochs in the Trainer, eager | **FAILED** |" in md
    assert "## Failures" in md and "### vae-epoch: exit status 1" in md
    for name in ("report.md", "report.json", "steps.log", "tests-junit.xml"):
        assert (out / name).is_file()


# ----------------------------------------------------------------------------- deadline
def test_budget_gives_each_step_its_cap_or_what_is_left():
    clock = FakeClock()
    budget = gc.Budget(100, clock)
    step = _step("s", "", cap_s=60, min_s=20)
    assert budget.timeout_for(step) == 60
    clock.t += 50  # 100 - 50 - the report's 5 s = 45 left
    assert budget.timeout_for(step) == pytest.approx(45 - 0)
    assert budget.timeout_for(step, reserve=20) == pytest.approx(25)
    with pytest.raises(gc.Skip, match=r"^not run: time budget \(5 s of 100 s left"):
        budget.timeout_for(step, reserve=40)
    clock.t += 30  # 15 left: under the step's minimum
    with pytest.raises(gc.Skip, match="not run: time budget"):
        budget.timeout_for(step)


def test_steps_past_the_deadline_are_not_started(tmp_path):
    clock = FakeClock()
    budget = gc.Budget(100, clock)
    ctx = _ctx(tmp_path)
    marker = tmp_path / "second-ran"

    def slow(ctx, cmd, out):  # the first step "takes" 70 s of the budget
        clock.t += 70
        return {}

    steps = [_step("first", "pass", slow, min_s=10),
             _step("second", f"open({str(marker)!r}, 'w')", min_s=30)]  # fmt: skip
    first, second = gc.run_steps(ctx, steps, budget, lambda name: True)
    assert first.status == "passed"
    assert second.status == "skipped" and second.reason.startswith("not run: time budget")
    assert not marker.exists()


def test_background_step_leaves_the_reserve_to_later_quiet_steps(tmp_path):
    budget = gc.Budget(100)
    ctx = _ctx(tmp_path)
    assert ctx.profile["quiet_reserve"] == 90  # the quick profile's
    # 95 s left, less the 90 s reserve = 5 s < 10 s: the background step cannot start
    steps = [_step("bg", "pass", min_s=10, background=True), _step("timed", "pass", quiet=True)]
    bg, timed = gc.run_steps(ctx, steps, budget, lambda name: True)
    assert bg.status == "skipped" and "time budget" in bg.reason
    assert timed.status == "passed"
    # without a quiet step after it, nothing is reserved
    (bg,) = gc.run_steps(ctx, steps[:1], gc.Budget(100), lambda name: True)
    assert bg.status == "passed"


# ----------------------------------------------------------------------------- judging steps
def test_a_failing_step_is_failed_with_the_tail_of_its_output(tmp_path):
    ctx = _ctx(tmp_path)
    steps = [
        _step("exits", "import sys; print('line one'); print('boom-marker'); sys.exit(3)"),
        _step("problems", "pass", lambda c, m, o: {"problems": ["the copy differs"]}),
        gc.Step(
            "silent-worker",
            "a worker that prints no result",
            lambda c: gc.Cmd([sys.executable, "-c", "print('hi')"], c.work),
            gc.collect_worker,
        ),
        _step("fine", "print('ok')", lambda c, m, o: {"value": 1}),
    ]
    exits, problems, silent, fine = gc.run_steps(ctx, steps, gc.Budget(100), lambda n: True)
    assert (exits.status, exits.returncode) == ("failed", 3)
    assert exits.reason == "exit status 3"
    assert exits.tail.splitlines()[-2:] == ["line one", "boom-marker"]
    assert (problems.status, problems.reason) == ("failed", "the copy differs")
    assert (silent.status, silent.reason) == ("failed", "the worker printed no result")
    assert (fine.status, fine.reason, fine.data, fine.tail) == ("passed", "", {"value": 1}, "")


def test_a_step_over_its_time_limit_is_stopped_and_failed(tmp_path):
    ctx = _ctx(tmp_path)
    step = _step("hangs", "import time; print('started', flush=True); time.sleep(60)",
                 cap_s=1.0, min_s=0.5)  # fmt: skip
    t0 = time.monotonic()
    (r,) = gc.run_steps(ctx, [step], gc.Budget(100), lambda n: True)
    assert time.monotonic() - t0 < 20  # SIGINT ends it at once; SIGKILL would at 1 + 15 s
    assert r.status == "failed" and r.reason.startswith("stopped at its time limit")
    assert "started" in r.tail


def test_selection_gpu_only_and_missing_env(tmp_path):
    ctx = _ctx(tmp_path)
    steps = [_step("picked", "pass"), _step("left-out", "pass"),
             _step("needs-gpu", "pass", gpu_only=True)]  # fmt: skip
    results = gc.run_steps(ctx, steps, gc.Budget(100), lambda n: n != "left-out")
    assert [(r.status, r.reason) for r in results] == [
        ("passed", ""),
        ("skipped", "not selected (--only / --skip)"),
        ("skipped", "no GPU"),
    ]
    ctx.env = {}  # env did not report: nothing after it runs
    (r,) = gc.run_steps(ctx, steps[:1], gc.Budget(100), lambda n: True)
    assert r.status == "skipped" and "env step did not report" in r.reason


# ----------------------------------------------------------------------------- report
def _report(tmp_path: Path, env: dict) -> dict:
    ctx = _ctx(tmp_path, **env)
    results = [
        gc.StepResult("env", "env what", "passed", data={"device_name": env.get("device_name"),
                      "torch": "2.x", "build_info": {"cuda": True}}),
        gc.StepResult("tests", "tests what", "failed", "exit status 1; 2 test(s) failed", 12.0,
                      1, {"passed": 5, "failed": 2, "skipped": 1, "cuda_passed": 3,
                          "cuda_failed": 2, "cuda_skipped": 0, "pytest_summary": "x",
                          "failed_tests": ["tests.test_a::test_one"]}, "E   assert 1 == 2"),
        gc.StepResult("gan", "gan what", "skipped", "not run: time budget (3 s of 450 s left)"),
    ]  # fmt: skip
    return gc.make_report(ctx, results, gc.Budget(450), ["python", "gpu_check.py"])


def test_report_without_a_gpu(tmp_path):
    report = _report(tmp_path, {"torch": "2.x", "python": "3.x", "cpu_count": 2})
    md = gc.write_report(report, tmp_path / "r")
    assert json.loads((tmp_path / "r" / "report.json").read_text()) == json.loads(
        json.dumps(report)
    )
    assert (tmp_path / "r" / "report.md").read_text() == md
    assert report["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert report["ok"] is False and report["gpu_found"] is False
    lines = md.splitlines()
    assert lines[2].startswith("**NO GPU FOUND")
    assert "**Result: 1 passed, 1 failed, 1 skipped** (exit status 1)" in md
    assert "| tests | tests what | **FAILED** | 12 | exit status 1; 2 test(s) failed |" in lines
    assert "- gan: not run: time budget (3 s of 450 s left)" in lines
    assert "- FAILED tests.test_a::test_one" in lines
    assert "### tests: exit status 1; 2 test(s) failed" in lines
    assert "E   assert 1 == 2" in lines


def test_report_with_a_gpu_names_it(tmp_path):
    env = {"cuda_available": True, "device_name": "NVIDIA H100 80GB HBM3", "capability": "9.0",
           "torch": "2.11.0+cu130", "torch_cuda": "13.0"}  # fmt: skip
    report = _report(tmp_path, env)
    md = gc.render_markdown(report)
    assert report["gpu_found"] is True and report["profile"] == "quick"
    assert "NO GPU" not in md
    assert md.splitlines()[2].startswith(
        "Device: **NVIDIA H100 80GB HBM3** (compute capability 9.0"
    )
    assert "CUDA 13.0" in md


def test_bench_rows_ratios_and_share_of_copy_bandwidth():
    def bench(provider, median, calls=10, mode="fwd_bwd"):
        return {"stats": {"median": median}, "extra_info": {
            "case": "op 8x8", "mode": mode, "device": "cuda", "provider": provider,
            "calls_per_round": calls, "floor_bytes": 1_000_000_000}}  # fmt: skip

    data = {"benchmarks": [bench("dgm_ext", 0.020), bench("eager", 0.060),
                           bench("compile", 0.040), bench("copy", 1.0),
                           bench("dgm_ext", 0.5, calls=1, mode="fwd")]}  # fmt: skip
    rows = {r["mode"]: r for r in gc.bench_rows(data, copy_gbs=1000.0)}
    r = rows["fwd_bwd"]
    assert r["dgm_ext"] == pytest.approx(0.002)  # 20 ms per round of 10 calls
    assert r["x_eager"] == pytest.approx(3.0) and r["x_compile"] == pytest.approx(2.0)
    assert r["gbs"] == pytest.approx(500.0)  # 1 GB in 2 ms
    assert r["pct_copy"] == pytest.approx(50.0)
    assert rows["fwd"]["x_eager"] is None and rows["fwd"]["gbs"] == pytest.approx(2.0)
    assert gc.bench_rows(data, copy_gbs=None)[0]["pct_copy"] is None


def test_junit_counts(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_ops" name="test_a[cpu]"/>'
        '<testcase classname="tests.test_ops" name="test_a[cuda]"><failure message="x"/>'
        "</testcase>"
        '<testcase classname="tests.test_ops" name="test_b[cuda]"><skipped message="y"/>'
        "</testcase>"
        '<testcase classname="tests.test_x" name="test_c"><error message="z"/></testcase>'
        "</testsuite></testsuites>"
    )
    got = gc.junit_counts(xml)
    failed = ["tests.test_ops::test_a[cuda]", "tests.test_x::test_c"]
    assert got == {"passed": 1, "failed": 2, "skipped": 1, "cuda_passed": 0, "cuda_failed": 1,
                   "cuda_skipped": 1, "failed_tests": failed}  # fmt: skip


def test_collect_tests_fails_on_failed_or_missing_tests(tmp_path):
    ctx, junit = _ctx(tmp_path), tmp_path / "j.xml"
    cmd = gc.Cmd(["pytest"], tmp_path, files={"junit": junit})
    junit.write_text('<testsuite><testcase classname="t" name="a"><failure/></testcase>'
                     '<testcase classname="t" name="b"/></testsuite>')  # fmt: skip
    got = gc.collect_tests(ctx, cmd, "...\n1 failed, 1 passed in 2.50s\n")
    assert got["problems"] == ["1 test(s) failed"]
    assert got["pytest_summary"] == "1 failed, 1 passed in 2.50s"
    junit.write_text('<testsuite><testcase classname="t" name="a"><skipped/></testcase>'
                     "</testsuite>")  # fmt: skip
    assert gc.collect_tests(ctx, cmd, "")["problems"] == ["no test ran"]


def test_collect_reproduce_checks_the_device_trained_on(tmp_path):
    ctx = _ctx(tmp_path, cuda_available=True)
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "results.json").write_text('{"wall_time_s": 12.5}')
    (run / "config.json").write_text('{"name": "gan-mnist", "device": "cuda"}')  # not a Trainer's
    cmd = gc.Cmd(["x"], tmp_path, files={"run": run})
    assert gc.collect_reproduce(ctx, cmd, "")["problems"] == [
        "no Trainer config.json: the device it trained on is unknown"]  # fmt: skip
    trainer = run / "train" / "config.json"
    trainer.write_text('{"trainer": {}, "world_size": 1, "device": "cpu"}')
    assert gc.collect_reproduce(ctx, cmd, "")["problems"] == ["trained on cpu, not cuda"]
    trainer.write_text('{"trainer": {}, "world_size": 1, "device": "cuda:0"}')
    got = gc.collect_reproduce(ctx, cmd, "")
    assert (got["problems"], got["devices"], got["wall_time_s"]) == ([], ["cuda:0"], 12.5)


def test_tests_command_on_a_gpu_machine(tmp_path):
    env = {"cuda_available": True, "cpu_count": 16, "data": {"mnist": "found"},
           "plugins": {"xdist": True, "pytest_timeout": True}}  # fmt: skip
    ctx = _ctx(tmp_path, **env)
    ctx.quick = False
    cmd = gc.tests_command(ctx)
    argv = cmd.argv
    assert argv[argv.index("-m") + 1 : argv.index("-m") + 3] == ["pytest", "tests"]
    assert argv[argv.index("-n") + 1] == "8" and "--timeout=240" in argv
    assert cmd.cwd == tmp_path / "work" / "src"
    for name in ("tests/test_gpu_check.py", "tools/gpu_check.py", "CMakeLists.txt", "csrc"):
        assert (cmd.cwd / name).exists(), name  # what the suite reads besides the package
    assert not (cmd.cwd / "dgm_ext").exists()  # the installed package is the one imported
    assert cmd.env["DGM_EXT_REQUIRE_DATA"] == "1" and cmd.env["OMP_NUM_THREADS"] == "1"
    ctx.env["data"] = {"mnist": "not found"}
    ctx.env["plugins"] = {}
    cmd = gc.tests_command(ctx)
    assert "-n" not in cmd.argv and "--timeout=240" not in cmd.argv
    assert "DGM_EXT_REQUIRE_DATA" not in cmd.env
