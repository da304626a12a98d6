"""``dgm-ext`` options checked by their effect, not only by the exit code.

``train vae`` --patience/--flow-length/--arch/--likelihood/--k/--ops/--device, ``eval``
--split/--variant, ``reproduce`` --checkpoint/--device, and the resume notice / ``--fresh``
of a rerun into an existing ``--out``. Runs are tiny (tens of images, one or a few epochs)
and in-process (``cli.main``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _data import DATA, needs_mnist, require
from torch import nn

from dgm_ext.cli import main
from dgm_ext.experiments import EXPERIMENTS, ExperimentSpec, RunContext
from dgm_ext.experiments.common import fit_model

# a tiny, fast VAE run: 64 train / 32 val images, 1 epoch, L=4, 32 hidden units
TINY = [
    "--latent-dim",
    "4",
    "--hidden",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "32",
    "--train-size",
    "64",
    "--val-size",
    "32",
    "--threads",
    "1",
    "--no-progress",
]


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def mnist_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """DGM_EXT_DATA pointing at the MNIST files (``_data.DATA``); torch's thread count restored
    after."""
    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _train(out: Path, *extra: str) -> int:
    return main(["train", "vae", "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One tiny Bernoulli MLP VAE trained by the CLI (shared by the eval/reproduce tests)."""
    require("mnist")
    run = tmp_path_factory.mktemp("trained") / "run"
    n = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DGM_EXT_DATA", str(DATA))
        assert _train(run) == 0
    torch.set_num_threads(n)
    yield run


# --------------------------------------------------------------------------- train vae


@needs_mnist
def test_train_patience_stops_early(
    tmp_path: Path, mnist_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--patience 2 with a validation loss that only rises: stop after epoch 3 of 8."""
    from dgm_ext.vae import VAE

    calls: list[int] = []

    def rising_val_loss(self: VAE, batch: object) -> dict[str, torch.Tensor]:
        calls.append(1)  # one validation batch per epoch (32 images, batch 32)
        return {"loss": torch.tensor(float(len(calls)))}

    monkeypatch.setattr(VAE, "validation_step", rising_val_loss)
    run = tmp_path / "run"
    assert _train(run, "--epochs", "8", "--patience", "2") == 0
    assert [r["epoch"] for r in _metrics(run)] == [1, 2, 3]
    assert [r["val_loss"] for r in _metrics(run)] == [1.0, 2.0, 3.0]
    assert _json(run / "config.json")["trainer"]["patience"] == 2
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["trainer"]["stopped_early"] and last["trainer"]["best_epoch"] == 1


@needs_mnist
@pytest.mark.parametrize(
    "extra, variant",
    [
        (["--arch", "conv", "--hidden", "8"], "static"),
        (["--flow-length", "3"], "static"),
        (["--likelihood", "gaussian"], "grey"),
        (["--likelihood", "beta"], "grey"),
        (["--likelihood", "categorical", "--categories", "8"], "levels"),
        (["--likelihood", "gaussian", "--variant", "dynamic"], "dynamic"),
    ],
    ids=["conv", "flow3", "gaussian", "beta", "categorical8", "variant"],
)
def test_train_model_options(
    extra: list[str], variant: str, tmp_path: Path, mnist_env: None
) -> None:
    """The saved model has the requested architecture / flow / likelihood; the data variant
    is the likelihood's default (or --variant) and recorded in eval.json."""
    from dgm_ext.vae import load_vae
    from dgm_ext.vae.networks import ConvDecoder, ConvEncoder, MLPEncoder

    run = tmp_path / "run"
    assert _train(run, *extra) == 0
    model = load_vae(run / "model.pt")
    args = dict(zip(extra[::2], extra[1::2], strict=True))
    res = _json(run / "eval.json")
    assert res["variant"] == variant
    assert torch.isfinite(torch.tensor(res["val"]["elbo"]))
    assert _json(run / "vae_args.json")["likelihood"] == args.get("--likelihood", "bernoulli")
    assert model.config.likelihood == args.get("--likelihood", "bernoulli")
    assert model.likelihood.name == model.config.likelihood
    if "--arch" in args:
        assert model.config.arch == "conv"
        assert isinstance(model.encoder, ConvEncoder) and isinstance(model.decoder, ConvDecoder)
    else:
        assert model.config.arch == "mlp" and isinstance(model.encoder, MLPEncoder)
    if "--flow-length" in args:
        assert model.config.flow_length == 3
        assert model.flow is not None and model.flow.length == 3
    else:
        assert model.flow is None
    if "--categories" in args:
        assert model.likelihood.k == 8 and model.decoder.n_params == 8


@needs_mnist
def test_train_k_reports_test_log_px(tmp_path: Path, mnist_env: None) -> None:
    run = tmp_path / "run"
    assert _train(run, "--k", "2") == 0
    ll = _json(run / "eval.json")["test_log_px"]
    assert ll["k"] == 2 and ll["n"] == 10000 and ll["log_px"] < 0


@needs_mnist
def test_train_ops_reference_uses_reference_ops(
    tmp_path: Path, mnist_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ops reference: the VAE calls dgm_ext.ops.reference, never the fused dgm_ext.ops."""
    import dgm_ext.ops as fused
    import dgm_ext.ops.reference as reference

    calls = {"fused": 0, "reference": 0}

    def counting(kind: str, fn):
        def wrapper(*args, **kwargs):
            calls[kind] += 1
            return fn(*args, **kwargs)

        return wrapper

    for kind, mod in (("fused", fused), ("reference", reference)):
        for name in ("kl_normal_std", "bernoulli_log_prob"):
            monkeypatch.setattr(mod, name, counting(kind, getattr(mod, name)))
    run = tmp_path / "run"
    assert _train(run, "--ops", "reference") == 0
    assert calls["reference"] > 0 and calls["fused"] == 0
    assert _json(run / "eval.json")["ops"] == "dgm_ext.ops.reference"
    assert _json(run / "config.json")["trainer"]["extra"]["ops"] == "dgm_ext.ops.reference"


@needs_mnist
def test_train_device_is_recorded(tmp_path: Path, mnist_env: None) -> None:
    run = tmp_path / "run"
    assert _train(run, "--device", "cpu") == 0
    cfg = _json(run / "config.json")
    assert cfg["trainer"]["device"] == "cpu" and cfg["device"] == "cpu"
    assert _json(run / "eval.json")["device"] == "cpu"


@needs_mnist
def test_train_compile_turns_on_the_compiled_step(tmp_path: Path, mnist_env: None) -> None:
    run = tmp_path / "run"
    assert _train(run, "--compile") == 0
    trainer = _json(run / "config.json")["trainer"]
    assert trainer["compile_step"] is True and trainer["compile_mode"] == "default"
    assert len(_metrics(run)) == 1
    assert _train(tmp_path / "eager") == 0
    assert _json(tmp_path / "eager" / "config.json")["trainer"]["compile_step"] is False
    with pytest.raises(SystemExit):
        main(["train", "vae", "--compile", "fastest"])


@pytest.mark.parametrize("device", ["cuda:99", "no-such-device"])
def test_bad_device_is_refused_before_training(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", "vae", "--out", str(run), "--device", device]) == 2
    assert f"--device {device}" in capsys.readouterr().err
    assert not run.exists()


@needs_mnist
def test_rerun_into_existing_out_says_it_resumes_and_fresh_starts_over(
    tmp_path: Path, mnist_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(run) == 0
    assert "resuming" not in capsys.readouterr().out
    assert _train(run, "--epochs", "2") == 0
    out = capsys.readouterr().out
    assert f"resuming run in {run} from epoch 1 ({run / 'checkpoints' / 'last.pt'})" in out
    assert "pass a new --out or --fresh to start over" in out
    assert [r["epoch"] for r in _metrics(run)] == [1, 2]
    assert _train(run, "--epochs", "2") == 0
    assert f"run in {run} already finished 2 epochs" in capsys.readouterr().out
    assert "already finished" in (run / "log.txt").read_text()

    assert _train(run, "--fresh") == 0
    out = capsys.readouterr().out
    (old,) = tmp_path.glob("run.old-*")
    assert f"--fresh: moved the existing {run} to {old}" in out and "resuming" not in out
    assert [r["epoch"] for r in _metrics(old)] == [1, 2]  # nothing deleted
    assert (old / "checkpoints" / "last.pt").is_file() and (old / "model.pt").is_file()
    assert [r["epoch"] for r in _metrics(run)] == [1]  # started over


# --------------------------------------------------------------------------------- eval


@needs_mnist
@pytest.mark.parametrize(
    "split, variant", [("val", None), ("train", "grey")], ids=["val", "train-grey"]
)
def test_eval_split_and_variant(
    split: str, variant: str | None, trained: Path, tmp_path: Path, mnist_env: None
) -> None:
    """eval reports the requested split/variant and its ELBO is that of those images
    (recomputed here with the same seed)."""
    from dgm_ext.data import load_mnist
    from dgm_ext.vae import evaluate_elbo, load_vae

    report = tmp_path / "eval.json"
    argv = ["eval", str(trained), "--split", split, "--k", "0", "--limit", "40"]
    argv += ["--json", str(report), "--threads", "1"]
    argv += ["--variant", variant] if variant else []
    assert main(argv) == 0
    res = _json(report)
    want = variant or "static"
    assert res["split"] == split and res["variant"] == want and "log_px" not in res

    def elbo(split: str, variant: str) -> float:
        torch.manual_seed(0)  # what the CLI does (--seed 0), in the same order
        model = load_vae(trained / "model.pt")
        data = load_mnist(split=split, variant=variant, root=str(DATA))
        return evaluate_elbo(model, data, limit=40)["elbo"]

    assert res["elbo"]["elbo"] == pytest.approx(elbo(split, want), abs=1e-4)
    assert res["elbo"]["elbo"] != pytest.approx(elbo("test", "static"), abs=1e-3)


# ---------------------------------------------------------------------------- reproduce


@needs_mnist
def test_reproduce_checkpoint_reuses_the_model(
    trained: Path, tmp_path: Path, mnist_env: None
) -> None:
    out = tmp_path / "rep"
    ckpt = trained / "model.pt"
    argv = ["reproduce", "vae-no-encoder", "--quick", "--checkpoint", str(ckpt)]
    argv += ["--out", str(out), "--train-size", "64", "--val-size", "32"]
    assert main([*argv, "--threads", "1", "--no-progress"]) == 0
    assert not (out / "train").exists() and not (out / "model.pt").exists()  # nothing trained
    assert f"loaded from {ckpt}" in (out / "results.md").read_text()
    assert _json(out / "config.json")["checkpoint"] == str(ckpt)
    assert _json(out / "results.json")["val_elbo"] < 0


def test_reproduce_checkpoint_refused_where_unused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["reproduce", "vae-elbo", "--checkpoint", str(tmp_path / "m.pt"), "--out"]
    assert main([*argv, str(tmp_path / "rep")]) == 2
    assert "does not take --checkpoint" in capsys.readouterr().err
    argv = ["reproduce", "vae-no-encoder", "--checkpoint", str(tmp_path / "m.pt"), "--out"]
    assert main([*argv, str(tmp_path / "rep")]) == 2
    assert "no model file" in capsys.readouterr().err


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def training_step(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return {"loss": self.lin(batch[0]).pow(2).mean()}


def run(ctx: RunContext) -> dict:
    """A registered experiment without MNIST (see ``tiny_experiment``)."""
    data = torch.utils.data.TensorDataset(torch.randn(16, 3))
    rows = fit_model(ctx, _Tiny(), data, data, ctx.out / "train", ctx.epochs or 1, 8, 1e-2)
    return {"_title": "tiny", "epochs": len(rows)}


@pytest.fixture
def tiny_experiment(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(EXPERIMENTS, "test-tiny", ExperimentSpec("test-tiny", __name__, "tiny"))
    n = torch.get_num_threads()
    yield "test-tiny"
    torch.set_num_threads(n)


def test_reproduce_device_resume_and_fresh(
    tiny_experiment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    argv = ["reproduce", tiny_experiment, "--out", str(out), "--no-progress", "--threads", "1"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert _json(out / "config.json")["device"] == "cpu"
    train_cfg = _json(out / "train" / "config.json")
    assert train_cfg["trainer"]["device"] == "cpu" and train_cfg["device"] == "cpu"

    assert main([*argv, "--epochs", "2"]) == 0
    run_dir = out / "train"
    assert f"resuming run in {run_dir} from epoch 1" in capsys.readouterr().out
    assert _json(out / "results.json")["epochs"] == 2
    assert _json(out / "config.json")["device"] is None  # default: the trainer's choice

    assert main([*argv, "--fresh"]) == 0
    text = capsys.readouterr().out
    (old,) = tmp_path.glob("rep.old-*")
    assert f"moved the existing {out} to {old}" in text and "resuming" not in text
    assert _json(old / "results.json")["epochs"] == 2
    assert _json(out / "results.json")["epochs"] == 1
    assert _json(out / "config.json")["fresh"] is True
