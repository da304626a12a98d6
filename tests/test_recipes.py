"""The recipes layer: the command line only parses (its parser is built from the recipes),
the Python functions take the same options, and ``--config`` reruns or continues a run."""

from __future__ import annotations

import json

import pytest

from dgm_ext import recipes
from dgm_ext.cli import build_parser, main
from dgm_ext.recipes import RECIPES

PLANAR = ["--steps", "40", "--k", "2", "--eval-samples", "200", "--no-progress", "--threads", "1"]


def _planar_cli(out, *extra: str) -> int:
    return main(["train", "planar", "--out", str(out), *PLANAR, *extra])


def _subparser(name: str):
    parser = build_parser()
    words = name.split()
    action = next(a for a in parser._actions if a.dest == "command")
    p = action.choices[words[0]]
    if len(words) > 1:
        p = next(a for a in p._actions if a.dest == "model").choices[words[1]]
    return p


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_cli_parser_is_the_recipes_parser(name):
    """Every option of the command line is an option of the recipe, with the same default
    and choices (the Python functions' keywords): the CLI declares nothing of its own."""
    cli_actions = {a.dest: a for a in _subparser(name)._actions if a.dest != "help"}
    api_actions = {a.dest: a for a in RECIPES[name].parser()._actions if a.dest != "help"}
    assert cli_actions.keys() == api_actions.keys()
    for dest, a in cli_actions.items():
        assert (a.default, a.choices) == (api_actions[dest].default, api_actions[dest].choices)


def test_choices_come_from_the_registries():
    from dgm_ext.gan.losses import CRITIC_LOSSES
    from dgm_ext.vae.likelihoods import LIKELIHOODS

    gan = {a.dest: a for a in _subparser("train gan")._actions}
    assert list(gan["loss"].choices) == list(CRITIC_LOSSES)
    vae = {a.dest: a for a in _subparser("train vae")._actions}
    assert list(vae["likelihood"].choices) == list(LIKELIHOODS)


def test_python_api_refuses_unknown_options_and_choices():
    with pytest.raises(TypeError, match=r"unknown option.*epochz"):
        recipes.train_vae(epochz=3)
    with pytest.raises(ValueError, match=r"--loss must be one of .*'w2'"):
        recipes.train_gan(loss="w2")
    with pytest.raises(TypeError, match="--n is required"):
        recipes.sample("runs/x", out="y")
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.run_recipe("train vea")


def test_python_api_matches_the_command_line(tmp_path, capsys):
    assert _planar_cli(tmp_path / "cli") == 0
    printed = json.loads(capsys.readouterr().out)
    res = recipes.train_planar(out=str(tmp_path / "api"), steps=40, k=2, eval_samples=200,
                               no_progress=True, threads=1)  # fmt: skip
    assert res["flow"] == str(tmp_path / "api" / "flow.pt")
    for key in ("nll", "se", "train_loss"):  # same seed, same options: the same fit
        assert res[key] == printed[key]


def test_config_reruns_and_continues_a_run(tmp_path, capsys):
    first = tmp_path / "first"
    assert _planar_cli(first, "--seed", "3", "--lr", "1e-3") == 0
    recorded = json.loads((first / "planar_args.json").read_text())
    assert (recorded["command"], recorded["model"], recorded["seed"]) == ("train", "planar", 3)
    capsys.readouterr()

    # the same run again from its folder (same --out): the fit is there, nothing retrains
    assert main(["train", "planar", "--config", str(first)]) == 0
    out = capsys.readouterr().out
    assert "holds this fit already" in out

    # another --out: a rerun with every recorded option, except those given again
    second = tmp_path / "second"
    config_json = first / "config.json"
    config_json.write_text("{}")  # --config also takes the run's config.json
    assert main(["train", "planar", "--config", str(config_json), "--out", str(second),
                 "--steps", "60"]) == 0  # fmt: skip
    again = json.loads((second / "planar_args.json").read_text())
    assert again["seed"] == 3 and again["lr"] == 1e-3 and again["k"] == 2
    assert again["steps"] == 60 and again["out"] == str(second)


def test_config_errors_are_one_line(tmp_path, capsys):
    gan_run = tmp_path / "gan"
    gan_run.mkdir()
    (gan_run / "planar_args.json").write_text(json.dumps({"command": "train", "model": "gan"}))
    with pytest.raises(SystemExit) as exc:
        main(["train", "planar", "--config", str(gan_run)])
    assert exc.value.code == 2
    assert "records a run of dgm-ext train gan, not train planar" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "planar", "--config", str(tmp_path)])
    assert f"no planar_args.json in {tmp_path}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot read"):
        recipes.train_planar(config=str(gan_run / "nothing.json"))
