"""The :class:`Recipe` contract: one command's options and what it does.

A recipe declares its options once, on an ``argparse`` parser (:attr:`Recipe.add_arguments`),
and runs on the parsed options (:attr:`Recipe.run`, returning the result as a dict). The
command line (:mod:`dgm_ext.cli`) only builds its parser from the recipes and prints what
they return; :meth:`Recipe.call` is the same recipe from Python, with the options as keywords
(same names and defaults, choices checked the same way). A training recipe records its
options in its run folder (:attr:`Recipe.options_file`), from which ``--config`` / ``config=``
reruns or continues the run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Recipe", "load_options", "save_options"]

# never carried over from a recorded run: they say what to do with *this* invocation
_NOT_CARRIED = frozenset({"fresh", "config", "command", "model", "recipe"})


@dataclass(frozen=True)
class Recipe:
    """One ``dgm-ext`` command.

    Attributes:
        name: the command words, e.g. ``"train vae"``.
        help: one line for the command list.
        add_arguments: adds the command's options to a parser.
        run: runs the command on parsed options; returns the result (printed as JSON by the
            command line).
        description, epilog: ``--help`` text.
        options_file: for training recipes, the file in the run folder that records the
            options (``--config`` reads it back); ``None`` for the others.
        raw_help: keep the epilog's line breaks.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    description: str | None = None
    epilog: str | None = None
    options_file: str | None = None
    raw_help: bool = False

    def parser(self, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
        """A parser with this recipe's options (``parser``, when given, is filled in)."""
        if parser is None:
            parser = argparse.ArgumentParser(prog=f"dgm-ext {self.name}", add_help=False)
        self.add_arguments(parser)
        if self.options_file is not None:
            parser.add_argument(
                "--config",
                default=None,
                metavar="RUN",
                help=f"start from the options recorded in a run of this command: its folder, "
                f"its {self.options_file} or its config.json; options given here override "
                "them (the same --out continues that run)",
            )
        return parser

    def namespace(self, positional: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
        """Parsed options from Python keywords: the parser's defaults, then a recorded run's
        options (``config=``), then ``positional`` and ``options``; unknown names and values
        outside an option's choices are refused in the option's own name."""
        actions = {a.dest: a for a in self.parser()._actions if a.dest != "help"}
        given = {**positional, **options}
        unknown = sorted(set(given) - set(actions))
        if unknown:
            names = ", ".join(sorted(actions))
            raise TypeError(f"{self.name}: unknown option(s) {', '.join(unknown)}; options: "
                            f"{names}")  # fmt: skip
        values = {dest: a.default for dest, a in actions.items()}
        if given.get("config") is not None:
            recorded = load_options(given["config"], self)
            values.update({k: v for k, v in recorded.items() if k in actions})
        values.update(given)
        for dest, a in actions.items():
            if a.choices is not None and values[dest] is not None and values[dest] not in a.choices:
                flag = a.option_strings[0] if a.option_strings else dest
                raise ValueError(f"{flag} must be one of {list(a.choices)}, got {values[dest]!r}")
            if a.required and values[dest] is None:
                flag = a.option_strings[0] if a.option_strings else dest
                raise TypeError(f"{self.name}: {flag} is required")
        return argparse.Namespace(**values)


def save_options(run_dir: Path, recipe: Recipe, args: argparse.Namespace) -> None:
    """Record ``args`` in ``run_dir/<recipe.options_file>`` (what ``--config`` reads back)."""
    from dgm_ext.train.checkpoint import atomic_write_text

    command, _, model = recipe.name.partition(" ")
    record = {k: v for k, v in vars(args).items() if not callable(v)}
    record.update(command=command, model=model)
    atomic_write_text(Path(run_dir) / str(recipe.options_file), json.dumps(record, indent=2))


def load_options(source: str | Path, recipe: Recipe) -> dict[str, Any]:
    """The options recorded by ``recipe`` in a run: ``source`` is the run folder, its options
    file or its ``config.json``; one-line errors for anything else."""
    path = Path(source)
    if path.is_dir() or path.name == "config.json":
        folder = path if path.is_dir() else path.parent
        path = folder / str(recipe.options_file)
        if not path.is_file():
            raise ValueError(
                f"--config {source}: no {recipe.options_file} in {folder} (not a run of "
                f"dgm-ext {recipe.name})"
            )
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {source}: cannot read {path} ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"--config {source}: {path} holds no options")
    command = f"{record.get('command', '')} {record.get('model', '')}".strip()
    if command and command != recipe.name:
        raise ValueError(
            f"--config {source}: {path} records a run of dgm-ext {command}, not {recipe.name}"
        )
    return {k: v for k, v in record.items() if k not in _NOT_CARRIED}
