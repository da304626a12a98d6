"""What a new user meets first (issue 22): options that mean what they say, one-line answers
instead of tracebacks, and failed starts that leave nothing behind.

- ``--epochs 0`` (and other counts of 0) of ``reproduce`` is refused instead of silently
  training the default; ``train vae --epochs 0`` evaluates the untrained model.
- ``eval`` of a file that is not a dgm_ext model answers in one line (exit 2, no torch
  advice to load it unsafely); a trainer checkpoint is evaluated with the config beside it.
- ``--out`` below a file, bad options and missing data are refused before anything is
  loaded or created (no ``--out`` folder, no empty ``mnist/`` in the data folder).
- ``--no-verify`` uses data files with a non-published checksum, with a warning.
- each command's ``--help`` lists only the options it reads.

Runs are tiny and in-process (``cli.main``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _data import require

from dgm_ext import cli
from dgm_ext.data import ChecksumError, ChecksumWarning, DatasetNotFoundError, load_mnist
from dgm_ext.data.cifar import find_cifar10
from dgm_ext.experiments import run_experiment
from dgm_ext.flows.realnvp import RealNVPConfig, build_realnvp, load_realnvp, save_realnvp
from dgm_ext.gan import load_gan
from dgm_ext.vae import build_vae, evaluate_elbo, load_vae, save_vae

# a tiny, fast VAE run: 64 train / 32 val images, 1 epoch, L=4, 32 hidden units
TINY = ["--latent-dim", "4", "--hidden", "32", "--epochs", "1", "--batch-size", "32",
        "--train-size", "64", "--val-size", "32", "--threads", "1", "--no-progress"]  # fmt: skip
UNSAFE_ADVICE = "weights_only set to False"


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    """``--threads 1`` changes the process's thread count: restore it after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny Bernoulli MLP VAE trained by the CLI: <run>/model.pt, checkpoints/last.pt."""
    root = require("mnist")
    run = tmp_path_factory.mktemp("trained") / "run"
    n = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGM_EXT_DATA", str(root))
        assert cli.main(["train", "vae", "--out", str(run), *TINY]) == 0
    torch.set_num_threads(n)
    return run


@pytest.fixture
def mnist_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    root = require("mnist")
    monkeypatch.setenv("DGM_EXT_DATA", str(root))
    return root


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty data root, downloads off: any data look-up fails at once."""
    root = tmp_path / "no-data"
    root.mkdir()
    monkeypatch.setenv("DGM_EXT_DATA", str(root))
    monkeypatch.setenv("DGM_EXT_NO_DOWNLOAD", "1")
    return root


@pytest.fixture
def data_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command loads MNIST or CIFAR-10 (options must be checked first)."""

    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was loaded before the options were checked")

    monkeypatch.setattr("dgm_ext.data.load_mnist", loaded)
    monkeypatch.setattr("dgm_ext.data.load_cifar10", loaded)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The command's stderr, checked to be a single ``dgm-ext: error:`` line."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dgm-ext: error: "), err
    assert "Traceback" not in err and UNSAFE_ADVICE not in err
    return lines[0]


# ----------------------------------------------------------------------------- --epochs 0


def test_reproduce_epochs_zero_is_refused(
    tmp_path: Path, mnist_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``reproduce vae-elbo --epochs 0`` trained the default epochs (``ctx.epochs or 2``)."""
    out = tmp_path / "rep"
    argv = ["reproduce", "vae-elbo", "--quick", "--epochs", "0", "--out", str(out)]
    argv += ["--train-size", "64", "--val-size", "32", "--threads", "1", "--no-progress"]
    assert cli.main(argv) == 2
    assert "--epochs must be an int >= 1, got 0" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "flag"), [("epochs", "--epochs"), ("k", "--k"), ("train_size", "--train-size")]
)
def test_run_experiment_refuses_zero_counts(
    tmp_path: Path, mnist_env: Path, option: str, flag: str
) -> None:
    out = tmp_path / "rep"
    options = {"train_size": 64, "val_size": 32, "epochs": 1, "progress": False, option: 0}
    with pytest.raises(ValueError, match=f"{flag} must be an int >= 1, got 0"):
        run_experiment("vae-elbo", out=out, quick=True, **options)
    assert not out.exists()


def test_train_vae_epochs_zero_evaluates_the_untrained_model(
    tmp_path: Path, mnist_env: Path
) -> None:
    out = tmp_path / "run"
    argv = ["train", "vae", "--out", str(out), *TINY, "--epochs", "0", "--seed", "3"]
    assert cli.main(argv) == 0
    assert json.loads((out / "eval.json").read_text())["epochs"] == 0
    torch.manual_seed(3)  # what --seed 3 does before the model is built
    fresh = build_vae(arch="mlp", latent_dim=4, hidden=32, likelihood="bernoulli")
    saved = load_vae(out / "model.pt").state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in fresh.state_dict().items())


def test_eval_empty_metrics_is_refused_not_ignored(
    trained: Path, mnist_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--metrics ''`` was falsy: silently no metrics (VAE) or all three (images)."""
    argv = ["eval", str(trained), "--metrics", "", "--limit", "8", "--k", "0", "--threads", "1"]
    assert cli.main(argv) == 2
    assert "metrics must be a comma-separated subset" in _one_line_error(capsys)


# -------------------------------------------------------------- eval of non-model files


NON_MODELS = ["random bytes", "text", "truncated model", "empty", "pickled object"]


def _non_model_files(folder: Path, model_file: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "random bytes": folder / "random.pt",
        "text": folder / "README.md",
        "truncated model": folder / "truncated.pt",
        "empty": folder / "empty.pt",
        "pickled object": folder / "pickled.pt",
    }
    files["random bytes"].write_bytes(os.urandom(3000))
    files["text"].write_text("# dgm_ext\n\nA PyTorch library for deep generative models.\n" * 20)
    files["truncated model"].write_bytes(model_file.read_bytes()[:2000])
    files["empty"].write_bytes(b"")
    # a complete torch file holding an arbitrary Python object: torch's refusal advises an
    # unsafe load (weights_only=False), which must not reach the user
    torch.save({"config": {}, "obj": argparse.Namespace(a=1)}, files["pickled object"])
    return files


@pytest.mark.parametrize("kind", NON_MODELS)
def test_eval_of_a_non_model_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    model = save_vae(build_vae(arch="mlp", latent_dim=2, hidden=8), tmp_path / "model.pt")
    path = _non_model_files(tmp_path / "files", model)[kind]
    assert cli.main(["eval", str(path)]) == 2
    line = _one_line_error(capsys)
    assert f"{path} is not a dgm_ext model file" in line
    assert "eval takes a model.pt" in line and "generator.pt" in line  # what it does take


@pytest.mark.parametrize("kind", NON_MODELS)
def test_loaders_refuse_non_model_files_in_one_line(tmp_path: Path, kind: str) -> None:
    model = save_vae(build_vae(arch="mlp", latent_dim=2, hidden=8), tmp_path / "model.pt")
    path = _non_model_files(tmp_path / "files", model)[kind]
    for load, what in ((load_vae, "VAE"), (load_gan, "GAN"), (load_realnvp, "RealNVP")):
        with pytest.raises(ValueError, match=f"is not a .*{what} file") as info:
            load(path)
        message = str(info.value)
        assert "\n" not in message and UNSAFE_ADVICE not in message


def test_loaders_name_the_file_they_got(tmp_path: Path) -> None:
    vae = save_vae(build_vae(arch="mlp", latent_dim=2, hidden=8), tmp_path / "vae.pt")
    cfg = RealNVPConfig(arch="mlp", couplings=2, hidden=8)
    flow = save_realnvp(build_realnvp(cfg), tmp_path / "flow.pt")
    with pytest.raises(ValueError, match=r"is not a dgm_ext GAN file .*it is a dgm_ext VAE file"):
        load_gan(vae)
    with pytest.raises(ValueError, match=r"is not a VAE file .*it is a dgm_ext RealNVP file"):
        load_vae(flow)
    assert load_vae(vae).config.latent_dim == 2  # the real thing still loads


def test_load_vae_of_a_trainer_checkpoint_says_what_it_is(trained: Path) -> None:
    with pytest.raises(ValueError, match="it is a dgm_ext training checkpoint") as info:
        load_vae(trained / "checkpoints" / "last.pt")
    assert "\n" not in str(info.value)


def _elbo_of(res: dict) -> float:
    return res["elbo"]["elbo"]


def test_eval_of_a_checkpoint_uses_the_config_beside_it(
    trained: Path, tmp_path: Path, mnist_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eval checkpoints/last.pt`` gave ``VAEConfig.__init__() got an unexpected keyword
    argument 'run_dir'``; the checkpoint holds the final weights, so its ELBO is model.pt's."""
    args = ["--limit", "40", "--k", "0", "--threads", "1"]
    last = trained / "checkpoints" / "last.pt"
    assert cli.main(["eval", str(last), *args, "--json", str(tmp_path / "ck.json")]) == 0
    got = json.loads((tmp_path / "ck.json").read_text())
    assert got["checkpoint"] == str(last) and got["model_config"] == str(trained / "model.pt")
    assert got["trained_epochs"] == 1
    torch.manual_seed(0)  # what the CLI does (--seed 0) before evaluating
    data = load_mnist("test", "static", root=mnist_env)
    want = evaluate_elbo(load_vae(trained / "model.pt"), data, limit=40)["elbo"]
    assert _elbo_of(got) == pytest.approx(want, abs=1e-4)

    # an interrupted run: no model.pt yet, the run folder's vae_args.json gives the config
    run = tmp_path / "interrupted"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(last.read_bytes())
    (run / "vae_args.json").write_text((trained / "vae_args.json").read_text())
    assert cli.main(["eval", str(run), *args, "--json", str(tmp_path / "run.json")]) == 0
    got = json.loads((tmp_path / "run.json").read_text())
    assert got["model_config"] == str(run / "vae_args.json")
    assert _elbo_of(got) == pytest.approx(want, abs=1e-4)

    # a checkpoint with no config beside it: one line saying so
    (run / "vae_args.json").unlink()
    capsys.readouterr()
    assert cli.main(["eval", str(run / "checkpoints" / "last.pt"), *args]) == 2
    line = _one_line_error(capsys)
    assert "is a training checkpoint" in line and "run folder" in line


def test_eval_of_a_missing_source_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["eval", str(tmp_path / "nothing.pt")]) == 2
    assert "no such file or folder; eval takes" in _one_line_error(capsys)


# ------------------------------------------------------------- --out below an existing file


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "vae"],
        ["train", "gan"],
        ["train", "realnvp"],
        ["train", "planar", "--steps", "10"],
        ["reproduce", "dirac-gan", "--quick"],
        ["reproduce", "vae-elbo", "--quick"],
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_out_below_a_file_is_one_line(
    tmp_path: Path, no_data: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert cli.main([*argv, "--out", str(afile / "run"), "--threads", "1"]) == 2
    assert f"{afile} is a file, not a folder" in _one_line_error(capsys)
    assert cli.main([*argv, "--out", str(afile), "--threads", "1"]) == 2
    assert f"--out {afile} is a file, not a folder" in _one_line_error(capsys)
    assert afile.read_text() == "not a folder"


def test_run_experiment_out_below_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ValueError, match="afile is a file, not a folder"):
        run_experiment("dirac-gan", out=afile / "run", quick=True)


# ------------------------------------------------------------ options before data and files


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "vae", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["train", "vae", "--lr", "0"], "--lr must be a finite number > 0"),
        (["train", "vae", "--patience", "0"], "--patience must be >= 1"),
        (["train", "vae", "--train-size", "0"], "--train-size must be >= 1"),
        (["train", "vae", "--epochs", "-1"], "--epochs must be >= 0"),
        (["train", "vae", "--k", "-1"], "--k must be >= 0"),
        (["train", "vae", "--ops", "eager"], "--ops must be 'fused' or 'reference'"),
        (["eval", "mnist:test", "--ops", "eager"], "--ops must be 'fused' or 'reference'"),
        (["train", "gan", "--train-size", "0"], "--train-size must be >= 1"),
        (["train", "realnvp", "--val-size", "0"], "--val-size must be >= 1"),
        (["train", "realnvp", "--lr", "-1"], "--lr must be a finite number > 0"),
        (["train", "realnvp", "--grad-clip", "-1"], "--grad-clip must be a finite number >= 0"),
        (["eval", "mnist:test", "--limit", "0"], "--limit must be >= 1"),
        (["eval", "mnist:test", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["eval", "mnist:test", "--kid-subsets", "0"], "--kid-subsets must be >= 1"),
        (["eval", "mnist:test", "--metrics", "fid,psnr"], "metrics must be a comma-separated"),
    ],
    ids=lambda a: "-".join(a) if isinstance(a, list) else None,
)
def test_bad_options_are_refused_before_data_and_files(
    tmp_path: Path,
    data_untouched: None,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    out = ["--out", str(tmp_path / "run")] if argv[0] == "train" else []
    assert cli.main([*argv, *out, "--threads", "1"]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_eval_json_into_a_missing_folder_is_refused_first(
    tmp_path: Path, data_untouched: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["eval", "mnist:test", "--json", str(tmp_path / "no" / "r.json")]) == 2
    assert "--json" in _one_line_error(capsys)


# ------------------------------------------------------------------ failed starts: no traces


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads allowed, but every URL fails at once (no test ever reaches the network)."""

    def urlopen(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in the tests")

    monkeypatch.delenv("DGM_EXT_NO_DOWNLOAD", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def test_failed_download_leaves_no_empty_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DatasetNotFoundError, match="network disabled"):
        load_mnist("test", root=root)
    assert list(root.iterdir()) == []  # no empty mnist/ left behind
    with pytest.raises(DatasetNotFoundError):
        load_mnist("test", root=root / "new" / "deeper", fashion=True)
    assert list(root.iterdir()) == []  # nor the folders above it that it created
    with pytest.raises(DatasetNotFoundError):
        find_cifar10(root / "c")
    assert list(root.iterdir()) == []


def test_train_vae_with_no_data_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _offline(monkeypatch)
    root, out = tmp_path / "data", tmp_path / "run"
    root.mkdir()
    assert cli.main(["train", "vae", "--data-root", str(root), "--out", str(out), *TINY]) == 2
    assert "MNIST files not found" in _one_line_error(capsys)
    assert list(root.iterdir()) == [] and not out.exists()


@pytest.mark.parametrize("name", ["vae-elbo", "realnvp-mnist", "families-mnist"])
def test_reproduce_with_no_data_leaves_no_out_folder(
    tmp_path: Path, no_data: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """The run folder used to be created, with config.json, before the data was looked up."""
    out = tmp_path / "rep"
    assert cli.main(["reproduce", name, "--quick", "--out", str(out), "--threads", "1"]) == 2
    assert "MNIST files not found" in _one_line_error(capsys)
    assert not out.exists()
    with pytest.raises(DatasetNotFoundError):
        run_experiment(name, out=out, quick=True)
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "option", "message"),
    [
        ("planar-2d", ["--epochs", "3"], "planar-2d trains for a number of steps"),
        ("vae-flow", ["--run", "0,x"], "must be distinct flow lengths"),
        ("realnvp-mnist", ["--run", "glow"], "--run must be a comma-separated subset"),
        ("gan-mnist", ["--ema", "1.5"], "--ema must be in (0, 1)"),
        ("cifar10-gan", ["--run", "jsd-9"], "jsd-9"),
    ],
)
def test_reproduce_bad_experiment_options_leave_no_out_folder(
    tmp_path: Path,
    no_data: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    option: list[str],
    message: str,
) -> None:
    out = tmp_path / "rep"
    argv = ["reproduce", name, "--quick", *option, "--out", str(out), "--threads", "1"]
    assert cli.main(argv) == 2
    assert message in _one_line_error(capsys)
    assert not out.exists()


# ------------------------------------------------------------------------------ --no-verify


@pytest.fixture
def unpublished(tmp_path: Path) -> Path:
    """A data root whose MNIST test labels are the real ones, gzip-compressed again: the
    same data under a checksum that is not the published one."""
    real = require("mnist") / "mnist"
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for f in real.iterdir():
        if f.name != "t10k-labels-idx1-ubyte.gz":
            (root / "mnist" / f.name).symlink_to(f.resolve())
    raw = gzip.decompress((real / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(raw, compresslevel=1, mtime=12345)
    )
    return root


def test_load_mnist_verify_false_warns(unpublished: Path) -> None:
    with pytest.raises(ChecksumError, match="--no-verify"):
        load_mnist("test", root=unpublished)
    with pytest.warns(ChecksumWarning, match="is not the published"):
        got = load_mnist("test", root=unpublished, verify=False)
    want = load_mnist("test", root=require("mnist"))
    assert torch.equal(got.labels, want.labels) and torch.equal(got.images, want.images)


def test_no_verify_on_the_command_line(
    unpublished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "vae", "--data-root", str(unpublished), "--out", str(out), *TINY, "--k", "0"]
    assert cli.main(argv) == 2
    line = _one_line_error(capsys)
    assert "does not match the expected" in line and "--no-verify" in line
    assert not out.exists()

    with warnings.catch_warnings():
        warnings.simplefilter("default")  # pytest's filters must not turn it into an error
        assert cli.main([*argv, "--no-verify"]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("dgm-ext: warning:")]
    assert len(notes) == 1 and "is not the published" in notes[0], err
    assert "t10k-labels-idx1-ubyte.gz" in notes[0]
    assert json.loads((out / "vae_args.json").read_text())["no_verify"] is True

    rep = ["reproduce", "vae-elbo", "--quick", "--data-root", str(unpublished)]
    assert cli.main([*rep, "--out", str(tmp_path / "rep")]) == 2
    assert "--no-verify" in _one_line_error(capsys)
    assert not (tmp_path / "rep").exists()  # checked before the run folder is created


# ----------------------------------------------------------------------------------- --help


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        cli.main([*argv, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "absent", "present"),
    [
        (["train", "planar"], ["--data-root", "--data-seed", "--no-verify"], ["--seed"]),
        (["train", "gan"], ["--data-seed", "MNIST folder"], ["--data-root", "--no-verify"]),
        (["train", "realnvp"], ["--data-seed"], ["--data-root", "--no-verify"]),
        (["train", "vae"], [], ["--data-root", "--data-seed", "--no-verify"]),
        (["eval"], ["--no-progress"], ["--data-root", "--data-seed", "--no-verify"]),
        (["reproduce"], [], ["--data-root", "--data-seed", "--no-verify", "--no-progress"]),
    ],
    ids=["train-planar", "train-gan", "train-realnvp", "train-vae", "eval", "reproduce"],
)
def test_help_lists_only_options_the_command_reads(
    capsys: pytest.CaptureFixture[str], argv: list[str], absent: list[str], present: list[str]
) -> None:
    text = _help(capsys, *argv)
    for option in absent:
        assert option not in text, f"{' '.join(argv)} --help lists {option}"
    for option in present:
        assert option in text
