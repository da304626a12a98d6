"""Shared plumbing of the experiments: run directories, data, training, results tables."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RunContext",
    "Table",
    "check_run_dir",
    "default_run_dir",
    "fit_model",
    "load_splits",
    "prepare_run_dir",
    "require_data",
    "resume_message",
    "run_experiment",
    "write_results",
]


@dataclass
class RunContext:
    """Options of one experiment run, handed to the experiment's ``run``.

    ``epochs``/``k``/``ops``/``train_size``/``val_size`` override the experiment's defaults
    when not ``None`` (sizes keep the first N images of the split); ``data_seed`` fixes the
    static binarisation independently of the training ``seed``;
    ``quick`` asks for the small (< 1 minute on a laptop CPU) version. ``device`` is handed
    to every ``TrainerConfig`` (``None``: the trainer's default, ``cuda:<LOCAL_RANK>`` when
    CUDA is available, else the CPU). ``compile`` (a torch.compile mode, ``"default"``
    included; ``None``: eager) turns on the trainer's compiled step. ``fresh`` asks
    :func:`run_experiment` to move an existing run directory aside instead of resuming the
    training runs inside it. ``verify=False`` (``--no-verify``) uses data files whose md5 is
    not the published one, with a :class:`~dgm_ext.data.files.ChecksumWarning`. ``trainer``:
    further ``TrainerConfig`` settings for every training of the run (``grad_clip``,
    ``lr_schedule``, ``warmup_steps``, ``precision``, ``accumulate_grad_batches``, ...),
    applied over the experiment's own.
    """

    name: str
    out: Path
    quick: bool = False
    seed: int = 0
    epochs: int | None = None
    k: int | None = None
    data_root: str | None = None
    ops: str = "fused"
    progress: bool = True
    checkpoint: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    data_seed: int = 0
    device: str | None = None
    fresh: bool = False
    compile: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    verify: bool = True
    trainer: dict[str, Any] = field(default_factory=dict)

    def compile_options(self) -> dict[str, Any]:
        """``TrainerConfig`` keywords for :attr:`compile`."""
        if self.compile is None:
            return {}
        return {"compile_step": True, "compile_mode": self.compile}

    def path(self, *parts: str) -> Path:
        """A path inside the run directory (parent folders created)."""
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log(self, msg: str) -> None:
        """Print a progress line and append it to ``<out>/log.txt``."""
        line = f"[{self.name} {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.path("log.txt"), "a", encoding="utf-8") as f:
            f.write(line + "\n")


@dataclass
class Table:
    """A markdown table: title, column names, rows and optional notes below it."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]]
    notes: str = ""

    def to_markdown(self) -> str:
        """Render as GitHub markdown."""

        def fmt(v: Any) -> str:
            if isinstance(v, float):
                return "nan" if math.isnan(v) else f"{v:.2f}" if abs(v) >= 0.01 else f"{v:.3g}"
            return str(v)

        lines = [f"## {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in self.rows]
        if self.notes:
            lines += ["", self.notes]
        return "\n".join(lines) + "\n"


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    """``runs/<name>-<timestamp>``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{name}-{stamp}"


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def check_run_dir(out: str | Path) -> Path:
    """Refuse (``ValueError``, one line) a run directory that cannot be created or written:
    an empty path, ``out`` or a folder above it being a file, or an existing folder that is
    not writable. Creates nothing; returns ``Path(out)``."""
    if str(out).strip() == "":
        raise ValueError("--out: empty path; pass the run folder to write")
    out = Path(out)
    for p in (out, *out.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            where = "is a file" if p == out else f"cannot be created: {p} is a file"
            raise ValueError(f"--out {out} {where}, not a folder; pass a folder path")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"--out {out}: {p} is not writable")
        break
    return out


def prepare_run_dir(out: Path, fresh: bool = False) -> Path | None:
    """Create the run directory ``out``; with ``fresh``, first move an existing non-empty
    one aside to ``<out>.old-<timestamp>`` (nothing is deleted) and say so on the console.

    Returns where the old directory went (``None`` when nothing was moved). Refused under
    ``torchrun`` (``WORLD_SIZE`` > 1), where every process would try to move it.
    """
    out = check_run_dir(out)
    moved = None
    if fresh and out.is_dir() and any(out.iterdir()):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                f"--fresh: {out} already exists; under torchrun move it aside (or pass a new "
                "--out) before starting the processes"
            )
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        moved = out.with_name(f"{out.name}.old-{stamp}")
        n = 1
        while moved.exists():
            n += 1
            moved = out.with_name(f"{out.name}.old-{stamp}-{n}")
        out.rename(moved)
        print(f"--fresh: moved the existing {out} to {moved}; starting over in {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    return moved


def resume_message(run_dir: Path, epochs: int | None = None) -> str | None:
    """What rerunning a training into ``run_dir`` will do, when it holds
    ``checkpoints/last.pt`` (the trainer then resumes from it); ``None`` otherwise."""
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    hint = "pass a new --out or --fresh to start over"
    try:
        from dgm_ext.train.checkpoint import load_checkpoint

        t = load_checkpoint(last)["trainer"]
        done, stopped = int(t["epoch"]), bool(t["stopped_early"])
    except Exception as exc:  # the trainer reports a broken checkpoint itself
        return f"resuming run in {run_dir} from {last} (unreadable here: {exc}); {hint}"
    if stopped:
        return (
            f"run in {run_dir} stopped early after epoch {done} ({last}): nothing left to "
            f"train; {hint}"
        )
    if epochs is not None and done >= epochs:
        return (
            f"run in {run_dir} already finished {done} epochs ({last}): nothing left to "
            f"train; pass a larger --epochs to continue, or a new --out or --fresh to start over"
        )
    return f"resuming run in {run_dir} from epoch {done} ({last}); {hint}"


def require_data(ctx: RunContext, dataset: str) -> None:
    """Find (or download, where allowed) data set ``dataset`` (``"mnist"``,
    ``"fashion-mnist"`` or ``"cifar10"``) under ``ctx.data_root`` and check its files' md5
    (unless ``ctx.verify`` is off), so a run fails before it creates anything.
    Raises :class:`~dgm_ext.data.DatasetNotFoundError` or
    :class:`~dgm_ext.data.ChecksumError`."""
    from dgm_ext.data import find_cifar10, find_mnist_files
    from dgm_ext.data.files import check_md5

    if dataset == "cifar10":
        find_cifar10(ctx.data_root)
        return
    if dataset not in ("mnist", "fashion-mnist"):
        raise ValueError(f"data set must be mnist, fashion-mnist or cifar10, got {dataset!r}")
    files = find_mnist_files(ctx.data_root, fashion=dataset == "fashion-mnist")
    for path, md5 in files.values():
        check_md5(path, md5, ctx.verify)


def load_splits(
    ctx: RunContext,
    variant: str,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> tuple[Any, Any, Any]:
    """MNIST train/val/test (50k/10k/10k) of ``variant``, optionally cut to the first n."""
    from dgm_ext.data import ImageDataset, load_mnist

    def cut(ds: ImageDataset, n: int | None) -> ImageDataset:
        if n is None or n >= len(ds):
            return ds
        return ImageDataset(ds.images[:n], ds.labels[:n], ds.variant, ds.transform, ds.name)

    n_train = ctx.train_size if ctx.train_size is not None else n_train
    n_val = ctx.val_size if ctx.val_size is not None else n_val
    out = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        ds = load_mnist(
            split=split, variant=variant, root=ctx.data_root, seed=ctx.data_seed, verify=ctx.verify
        )
        out.append(cut(ds, n))
    return tuple(out)


def fit_model(
    ctx: RunContext,
    model: torch.nn.Module,
    train_set: Any,
    val_set: Any,
    run_dir: Path,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int | None = None,
    epoch_callback: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train with the shared harness (:class:`~dgm_ext.experiments.harness.TrainingRun`);
    returns the Trainer's per-epoch metric rows. ``epoch_callback(epoch)`` runs after each
    epoch (1-based) on the process that writes files. A ``run_dir`` that already holds
    ``checkpoints/last.pt`` is resumed (announced on the console and in ``log.txt``)."""
    from dgm_ext.experiments.callbacks import EpochFunction
    from dgm_ext.experiments.harness import TrainingRun

    ops = getattr(getattr(model, "ops", None), "__name__", ctx.ops)
    callbacks = [EpochFunction(epoch_callback)] if epoch_callback is not None else []
    run = TrainingRun(
        ctx, model, run_dir, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
        callbacks=callbacks, extra={"ops": ops},
    )  # fmt: skip
    return run.fit(train_set, val_set)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_results(ctx: RunContext, title: str, tables: Sequence[Table], results: dict) -> Path:
    """Write ``results.md`` (markdown tables + figure list) and ``results.json``."""
    figures = sorted(p.relative_to(ctx.out).as_posix() for p in ctx.out.rglob("*.png"))
    md = [f"# {title}", ""]
    md.append(
        f"Run `{ctx.name}`{' (quick)' if ctx.quick else ''}, seed {ctx.seed}, "
        f"ops backend `{ctx.ops}`, wall time {results.get('wall_time_s', float('nan')):.0f} s."
    )
    md.append("")
    md += [t.to_markdown() for t in tables]
    if figures:
        md += ["## Figures", ""] + [f"- `{f}`" for f in figures] + [""]
    path = ctx.path("results.md")
    path.write_text("\n".join(md), encoding="utf-8")
    ctx.path("results.json").write_text(json.dumps(_jsonable(results), indent=2), encoding="utf-8")
    return path


def _check_sizes(ctx: RunContext, names: tuple[str, ...]) -> None:
    """Refuse counts that cannot mean what they say (``epochs=0`` used to train the
    experiment's default number of epochs)."""
    for name in names:
        v = getattr(ctx, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            msg = f"--{name.replace('_', '-')} must be an int >= 1, got {v!r}"
            if name == "epochs":
                msg += (
                    " (every experiment trains its models; `dgm-ext train vae --epochs 0` "
                    "evaluates an untrained VAE)"
                )
            raise ValueError(msg)


def run_experiment(
    name: str,
    out: str | Path | None = None,
    quick: bool = False,
    **options: Any,
) -> dict:
    """Run a registered experiment end to end; returns its results dict.

    ``options`` are the fields of :class:`RunContext` (``epochs``, ``seed``, ``device``,
    ``train_size``, ``fresh``, ...) and the experiment's own options, the same as on the
    command line (``run_experiment("vae-flow", run="0,40", seeds=1)`` is
    ``dgm-ext reproduce vae-flow --run 0,40 --seeds 1``; ``dgm-ext list`` names them).

    The run directory (default ``runs/<name>-<timestamp>``) receives ``config.json``,
    per-model training folders (metrics, checkpoints), figures, ``results.md`` and
    ``results.json``. Training folders left by an earlier run into the same ``out`` are
    resumed (announced on the console); ``fresh=True`` moves such an ``out`` aside to
    ``<out>.old-<timestamp>`` first and starts over. Options (counts >= 1, the experiment's
    own ``check``), ``out`` and the data sets it reads are checked before anything is
    created, so a run that cannot start leaves no folder behind.
    """
    from dgm_ext.experiments import get_experiment

    spec = get_experiment(name)
    # the experiment's own options (the CLI's --run, --ema, ...) are keywords too
    fields = {f.name for f in dataclasses.fields(RunContext)} - {"name", "out", "quick"}
    extra = dict(options.pop("extra", None) or {})
    for key in [k for k in options if k not in fields]:
        if key not in spec.options:
            takes = sorted(fields - {"extra"}) + list(spec.options)
            raise TypeError(
                f"run_experiment({name!r}) got an unexpected keyword {key!r} (it takes: "
                f"{', '.join(takes)})"
            )
        extra[key] = options.pop(key)
    out_dir = check_run_dir(out if out is not None else default_run_dir(name))
    ctx = RunContext(name=name, out=out_dir, quick=quick, extra=extra, **options)
    _check_sizes(ctx, ("epochs", "train_size", "val_size"))
    if ctx.checkpoint and not spec.takes_checkpoint:
        from dgm_ext.experiments import EXPERIMENTS

        able = sorted(n for n, s in EXPERIMENTS.items() if s.takes_checkpoint)
        raise ValueError(
            f"checkpoint: experiment {name!r} trains its own models and does not take "
            f"--checkpoint (experiments that do: {', '.join(able) or 'none'})"
        )
    unknown = sorted(set(ctx.extra) - set(spec.options))
    if unknown:
        flags = ", ".join(f"--{k}" for k in unknown)
        raise ValueError(
            f"{flags}: experiment {name!r} does not take "
            + ("this option" if len(unknown) == 1 else "these options")
            + (f" (it takes: {', '.join('--' + o for o in spec.options)})" if spec.options else "")
        )
    if ctx.checkpoint and not Path(ctx.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint: no model file at {ctx.checkpoint}")
    if ctx.fresh and ctx.checkpoint and out_dir.resolve() in Path(ctx.checkpoint).resolve().parents:
        raise ValueError(
            f"--fresh would move {ctx.checkpoint} aside with the run directory {out_dir}; "
            "copy the checkpoint elsewhere or pass a new --out"
        )
    # options and data first: a run that cannot start leaves nothing behind
    spec.check(ctx)
    _check_sizes(ctx, ("k",))  # after the experiment's check: planar-2d's k counts layers
    for dataset in spec.data:
        require_data(ctx, dataset)
    prepare_run_dir(out_dir, ctx.fresh)
    if ctx.seed is not None:
        torch.manual_seed(ctx.seed)
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(ctx).items()}
    cfg.update(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        data_root=ctx.data_root if ctx.data_root is not None else os.environ.get("DGM_EXT_DATA"),
        started=_dt.datetime.now().isoformat(timespec="seconds"),
    )
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    t0 = time.perf_counter()
    results = spec.load()(ctx)
    results["wall_time_s"] = time.perf_counter() - t0
    tables = results.pop("_tables", [])
    write_results(ctx, results.pop("_title", name), tables, results)
    ctx.log(f"done in {results['wall_time_s']:.1f} s; results in {out_dir / 'results.md'}")
    return results
