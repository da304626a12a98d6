"""The Python API of the experiments takes every option the command line takes, as keywords."""

from __future__ import annotations

import json

import pytest

from dgm_ext.experiments import run_experiment


@pytest.mark.usefixtures("one_thread")
def test_experiment_options_are_keywords(tmp_path):
    """``--run kl,u4 --steps 30`` of ``dgm-ext reproduce planar-2d`` as keywords."""
    out = tmp_path / "p"
    results = run_experiment("planar-2d", out=out, quick=True, progress=False, k=2, run="kl,u4",
                             steps=30)  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["extra"] == {"run": "kl,u4", "steps": 30}
    assert cfg["quick"] is True and cfg["progress"] is False
    assert results["wall_time_s"] > 0
    # the older form, options in extra=..., still works and means the same
    out2 = tmp_path / "q"
    run_experiment("planar-2d", out=out2, quick=True, progress=False, k=2,
                   extra={"run": "kl,u4", "steps": 30})  # fmt: skip
    assert json.loads((out2 / "config.json").read_text())["extra"] == cfg["extra"]


def test_an_unknown_keyword_names_what_the_experiment_takes(tmp_path):
    with pytest.raises(TypeError) as e:
        run_experiment("vae-flow", out=tmp_path / "v", run="0,40", seedz=1)
    msg = str(e.value)
    assert msg.startswith("run_experiment('vae-flow') got an unexpected keyword 'seedz'")
    assert msg.endswith("run, seeds)") and "epochs" in msg
    assert not (tmp_path / "v").exists()  # refused before anything was created
