"""The README's examples, extracted and run, so that the front page cannot drift from the code.

What is checked:

* every ```python block is executed in a fresh namespace, in a temporary folder, with
  ``$DGM_EXT_DATA`` pointing at the test data (tests/_data.py);
* every ``dgm-ext ...`` / ``python -m dgm_ext ...`` command of README.md and docs/RESULTS.md
  (in ```bash blocks and in inline code) is parsed by the CLI's own parser, so a wrong option
  name or choice fails (argparse exits with status 2); ``reproduce NAME`` must name an
  experiment that takes the options given to it;
* the commands of ```bash blocks marked ``<!-- readme-test: run [ARGS] -->`` are run through
  :func:`dgm_ext.cli.main`, in README order in one folder (the main job first, then the
  ``eval`` of its run folder), with ARGS appended: the quick form (argparse keeps the last
  value of an option given twice, so ``--epochs 1`` after the README's options wins);
* so are the commands of blocks marked ``<!-- readme-test: run-each -->`` (the command-line
  tour), each with the quick form of the first rule in ``QUICK`` it matches; a command that
  needs what a CPU test machine lacks (a GPU, CIFAR-10, the Inception weights, hours of full
  runs) matches a rule in ``CANNOT_RUN`` that says so, and a command matching neither fails.
  The user's own files the tour names (``my_images/``, ``real/``, ``real.npz``) are made
  first.

Markers sit on the lines right above a fenced block (HTML comments: GitHub does not show
them). ``<!-- readme-test: replace OLD => NEW -->`` above a ```python block substitutes a
quick form before it runs; OLD must occur in the block, so an edited snippet cannot silently
drop out of its quick form. The ``ci:install`` and ``ci:test`` blocks are CI's (.ci/run runs
them verbatim) and are not run here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from _data import require

from dgm_ext.cli import build_parser, main
from dgm_ext.experiments import get_experiment

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/RESULTS.md")
_MARKER = re.compile(r"^<!--\s*readme-test:\s*([\w-]+)\s*(.*?)\s*-->$")
_FENCE = re.compile(r"^```(\w*)")


@dataclass
class Block:
    """One fenced code block: its language, text, first line number and test markers."""

    doc: str
    lang: str
    code: str
    line: int
    markers: list[tuple[str, str]] = field(default_factory=list)
    ci: bool = False  # between <!-- ci:NAME --> markers: CI's own block

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def parse_blocks(doc: str) -> tuple[list[Block], str]:
    """The fenced blocks of ``doc`` and its text outside them (for inline code)."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    prose: list[str] = []
    markers: list[tuple[str, str]] = []
    in_ci = False
    i = 0
    while i < len(lines):
        text = lines[i]
        fence = _FENCE.match(text)
        if fence:
            start = i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise AssertionError(f"{doc}:{start + 1}: code block is never closed")
            blocks.append(Block(doc, fence.group(1), "\n".join(body), start + 1, markers, in_ci))
            markers = []
        else:
            m = _MARKER.match(text.strip())
            if m:
                markers.append((m.group(1), m.group(2)))
            else:
                if markers:
                    raise AssertionError(
                        f"{doc}:{i + 1}: readme-test marker not directly above a code block"
                    )
                in_ci = text.startswith("<!-- ci:") or (in_ci and not text.startswith("<!-- /ci:"))
                prose.append(text)
        i += 1
    return blocks, "\n".join(prose)


def commands(text: str) -> list[str]:
    """The shell command lines of a bash block (comments and blank lines dropped)."""
    out = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(shlex.join(words))
    return out


def cli_argv(command: str) -> tuple[dict[str, str], list[str]] | None:
    """``(env assignments, argv after the program)`` of a dgm_ext command, None otherwise."""
    words = shlex.split(command, comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[:1] == ["dgm-ext"]:
        return env, words[1:]
    if words[:3] == ["python", "-m", "dgm_ext"]:
        return env, words[3:]
    return None


def _all() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    inline: list[str] = []
    for doc in DOCS:
        b, prose = parse_blocks(doc)
        blocks += b
        # inline code may wrap across lines (not across paragraphs)
        for paragraph in re.split(r"\n\s*\n", prose):
            for span in re.findall(r"`([^`]+)`", paragraph):
                span = " ".join(span.split())
                if cli_argv(span) is not None:
                    inline.append(span)
    return blocks, inline


BLOCKS, INLINE = _all()
README_BLOCKS = [b for b in BLOCKS if b.doc == "README.md" and not b.ci]
PYTHON = [b for b in README_BLOCKS if b.lang == "python"]
BASH = [b for b in BLOCKS if b.lang == "bash" and not b.ci]
RUN = [b for b in README_BLOCKS if b.lang == "bash" and any(k == "run" for k, _ in b.markers)]
RUN_EACH = [b for b in README_BLOCKS if b.lang == "bash" and ("run-each", "") in b.markers]

# Quick forms of the tour's commands (regex on the command -> options appended).
_TINY = ["--epochs", "1", "--no-progress"]
QUICK = [
    (r"^dgm-ext list$", []),
    (r"--help$", []),
    (r"^dgm-ext reproduce vae-mlp --quick", [*_TINY, "--train-size", "256", "--val-size", "128"]),
    (r"^dgm-ext train vae ", [*_TINY, "--train-size", "256", "--val-size", "128"]),
    (r"^dgm-ext train gan --config runs/gan --epochs", ["--epochs", "2", "--n", "64"]),
    (r"^dgm-ext train gan ", [*_TINY, "--train-size", "128", "--n", "64"]),
    (r"^dgm-ext train planar ", ["--steps", "50", "--eval-samples", "1000"]),
    (
        r"^dgm-ext train realnvp ",
        [*_TINY, "--train-size", "256", "--val-size", "64", "--hidden", "16", "--couplings", "2"],
    ),
    (r"^dgm-ext eval runs/realnvp ", ["--limit", "50"]),
    (r"^dgm-ext (eval|sample) ", ["--n", "64"]),
]
CANNOT_RUN = [
    (r"cifar10", "needs CIFAR-10 (and the Inception weights): not on the test machines"),
    (r"--device cuda", "needs a GPU"),
    (r"reproduce families-mnist", "needs the full vae-elbo, gan-mnist and realnvp-mnist runs"),
    (r"reproduce conditional-mnist --quick$", "run as written by tests/test_conditional_mnist"),
]
CLI_COMMANDS = list(dict.fromkeys([c for b in BASH for c in commands(b.code)] + INLINE))


def test_extraction_finds_the_examples() -> None:
    """Guard against a parser (or README) change that leaves the tests below nothing to do."""
    assert len(PYTHON) >= 5, [b.id for b in PYTHON]
    assert len(RUN) >= 2, "the README's main job and an eval are no longer marked to run"
    assert len(RUN_EACH) >= 2, "the command-line tour is no longer marked run-each"
    main_job = [c for b in RUN for c in commands(b.code) if "reproduce vae-elbo" in c]
    assert main_job, "the main job's block is not marked <!-- readme-test: run ... -->"
    assert len(CLI_COMMANDS) >= 20, CLI_COMMANDS
    ci = {b.lang for b in BLOCKS if b.ci}
    assert ci == {"bash"}, "README lost its ci:install / ci:test blocks"
    allowed = {"python": {"replace"}, "bash": {"run", "run-each"}}
    for block in BLOCKS:
        for kind, _ in block.markers:
            assert (
                kind in allowed.get(block.lang, ()) and block.doc == "README.md" and not block.ci
            ), f"{block.id}: marker {kind!r} does nothing above a {block.lang or 'plain'} block"


def test_bash_blocks_hold_only_known_commands() -> None:
    """Every command of a (non-CI) bash block is one this file checks."""
    for block in BASH:
        for command in commands(block.code):
            assert cli_argv(command) is not None, f"{block.id}: unchecked command {command!r}"


def _check_command(command: str) -> None:
    _, argv = cli_argv(command)  # type: ignore[misc]
    if command.startswith("python"):
        assert importlib.util.find_spec("dgm_ext.__main__") is not None
    parser = build_parser()
    err = io.StringIO()
    code = None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        code = exc.code
    if code == 0 and "--help" in argv:
        return
    if code is not None:
        pytest.fail(f"{command!r} does not parse: {err.getvalue().strip()}", pytrace=False)
    if args.command == "reproduce":
        spec = get_experiment(args.name)  # ValueError names the known experiments
        for opt in ("run", "ema"):
            if getattr(args, opt) is not None:
                assert opt in spec.options, f"{command!r}: {args.name} takes no --{opt}"
        assert not args.checkpoint or spec.takes_checkpoint, f"{command!r}: no --checkpoint"


@pytest.mark.parametrize("command", CLI_COMMANDS, ids=lambda c: c.replace(" ", "_"))
def test_command_parses(command: str) -> None:
    _check_command(command)


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    """The examples may set torch's thread count; later tests get the suite's back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _substitute(block: Block) -> str:
    code = block.code
    for kind, arg in block.markers:
        assert kind == "replace", f"{block.id}: unknown python marker {kind!r}"
        old, sep, new = arg.partition(" => ")
        assert sep and old, f"{block.id}: marker must read 'replace OLD => NEW', got {arg!r}"
        assert old in code, f"{block.id}: quick form {old!r} is no longer in the snippet"
        code = code.replace(old, new)
    return code


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_snippet_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _substitute(block)
    if "load_mnist(" in code:  # a call, not a mention in a comment
        monkeypatch.setenv("DGM_EXT_DATA", str(require("mnist")))
    monkeypatch.setenv("DGM_EXT_NO_DOWNLOAD", "1")
    monkeypatch.chdir(tmp_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        exec(compile(code, block.id, "exec"), {"__name__": "__readme__"})


def _quick_form(block: Block, command: str) -> list[str] | str:
    """The options appended to run ``command`` quickly, or why it cannot run here."""
    if ("run-each", "") not in block.markers:
        (quick,) = [arg for kind, arg in block.markers if kind == "run"]
        return shlex.split(quick)
    for pattern, reason in CANNOT_RUN:
        if re.search(pattern, command):
            return reason
    for pattern, extra in QUICK:
        if re.search(pattern, command):
            return extra
    pytest.fail(f"{block.id}: {command!r} has no quick form in QUICK (nor a reason in "
                "CANNOT_RUN)", pytrace=False)  # fmt: skip


def _users_files(data: Path) -> None:
    """The files the tour takes to be the user's: ``my_images/`` (RGB PNGs, one subfolder
    per class), ``real/`` (MNIST test digits as PNGs) and ``real.npz`` (their statistics)."""
    import numpy as np
    from PIL import Image

    from dgm_ext.data import load_mnist

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (Path("my_images") / cls).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(Path("my_images") / cls / f"{i}.png")
    Path("real").mkdir()
    test = load_mnist("test", "levels", root=data).images[:64]
    for i, img in enumerate(test):
        Image.fromarray(img[0].to(torch.uint8).numpy()).save(Path("real") / f"{i:03d}.png")
    assert main(["eval", "real/", "mnist:test", "--n", "64", "--save-stats", "real.npz"]) == 0


def test_marked_commands_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The main job (quick form) and every command after it, in README order, in one
    folder: the eval of the main job's run, then the command-line tour."""
    data = require("mnist")
    monkeypatch.setenv("DGM_EXT_NO_DOWNLOAD", "1")
    monkeypatch.setenv("DGM_EXT_DATA", str(data))
    monkeypatch.chdir(tmp_path)
    _users_files(data)
    ran, not_run = [], []
    for block in sorted(RUN + RUN_EACH, key=lambda b: b.line):
        for command in commands(block.code):
            quick = _quick_form(block, command)
            if isinstance(quick, str):
                not_run.append((command, quick))
                continue
            env, argv = cli_argv(command)  # type: ignore[misc]
            for key, value in env.items():
                if key == "DGM_EXT_DATA":
                    # the README's value is relative to the repository; it must name
                    # the folder that holds mnist/ (the test itself reads data)
                    there = ROOT / value
                    assert not there.exists() or (there / "mnist").is_dir(), (
                        f"{block.id}: DGM_EXT_DATA={value} must name the folder holding mnist/"
                    )
                else:
                    monkeypatch.setenv(key, value)
            with torch.random.fork_rng(devices=[]):
                try:
                    rc = main(argv + quick)
                except SystemExit as exc:  # --help
                    rc = exc.code
            out = capsys.readouterr()
            assert rc == 0, f"{block.id}: {command!r} + {quick!r} -> {rc}\n{out.err[-2000:]}"
            ran.append(command)
    assert (tmp_path / "runs" / "vae-elbo" / "model.pt").is_file()
    assert (tmp_path / "runs" / "gan-s1" / "generator.pt").is_file()
    # what cannot run here is a short, stated list, not a way out
    assert len(not_run) <= 4 and len(ran) >= 25, (len(ran), not_run)
