"""The ``lightning-maggy`` command line, in LightningCLI's style on jsonargparse.

::

    lightning-maggy search --config study.yaml [--num_trials 5 ...] [--print_config]
    lightning-maggy show EXP_DIR [--follow]

``search`` runs :func:`~lightning_maggy.search` from a YAML file (or flags): ``module`` and
``datamodule`` are import paths, ``space`` maps each hyperparameter to its dict form
(``{type: double, low: 1.0e-4, high: 0.1, log: true}``), ``optimizer``, ``early_stop`` and
``backend`` are names or ``{class_path: ..., init_args: {...}}``; every other key is an
argument of ``search()``, read from its signature, so the command line follows the function.
``show`` prints a study's table from its journal, also while the study runs (without taking the
journal's lock), and ``--follow`` redraws it every second until the study ends.

Exit codes: 0, the study finished (or ran into its ``timeout``); 1, it was aborted or stalled,
or a journal cannot be read; 2, a bad command line or configuration (nothing started);
130, interrupted (Ctrl-C).
"""

from __future__ import annotations

import importlib
import traceback
import inspect
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

__all__ = ["build_parser", "main", "render", "search_parser", "show_parser"]

INSTALL_HINT = "the lightning-maggy command line needs jsonargparse: pip install 'lightning_maggy[cli]'"

#: search() arguments the command line declares itself: import paths instead of objects, the
#: space in its dict form, the backend typed so that a class_path is instantiated, and the two
#: folders as plain optional strings (from ``str | PathLike | None``, jsonargparse made
#: ``--exp_dir null`` the string "None").
OWN = ("module_or_fn", "space", "datamodule", "backend", "exp_dir", "resume")

EXIT_ABORTED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _jsonargparse() -> Any:
    try:
        import jsonargparse
    except ImportError as err:
        raise SystemExit(f"lightning-maggy: {INSTALL_HINT} ({err})") from None
    return jsonargparse


def build_parser() -> Any:
    """The ``lightning-maggy`` parser (a jsonargparse ``ArgumentParser``) with its subcommands."""
    ja = _jsonargparse()
    from lightning_maggy import __version__

    parser = ja.ArgumentParser(
        prog="lightning-maggy",
        description="lightning_maggy's command line: run a hyperparameter search from a YAML config; "
        "print a study's table from its journal, also while it runs.",
    )
    parser.add_argument("--version", action="version", version=f"lightning_maggy {__version__}")
    commands = parser.add_subcommands()
    commands.add_subcommand("search", search_parser(), help="Run a search from a YAML config.")
    commands.add_subcommand(
        "show", show_parser(), help="Print a study's table from its journal (--follow: keep it updating)."
    )
    return parser


def search_parser() -> Any:
    """The parser of ``lightning-maggy search``: :data:`OWN`, then the rest of ``search()``'s signature."""
    ja = _jsonargparse()
    from lightning_maggy.backends.base import Backend
    from lightning_maggy.experiment import search

    find = ja.ArgumentParser(description="Runs a hyperparameter search (lightning_maggy.search) from a config.")
    find.add_argument("--config", action=ja.ActionConfigFile, help="A YAML (or JSON) file with the arguments below.")
    find.add_argument(
        "--module", type=str, required=True,
        help="Import path of the LightningModule class to search (or of a train or trial function), "
             "e.g. mypkg.models.MyModule. The current directory and PYTHONPATH are searched.",
    )
    find.add_argument(
        "--datamodule", type=Optional[str], default=None,
        help="Import path of a LightningDataModule class (built per trial with the hyperparameters "
             "it accepts) or of a function(hparams) returning one.",
    )
    find.add_argument(
        "--space", type=Dict[str, Any], required=True,
        help="The search space: name -> {type: double|integer, low: ..., high: ..., log: false} or "
             "{type: discrete|categorical, values: [...]}.",
    )
    find.add_argument(
        "--backend", type=Union[str, Backend], default="local",
        help="'local', 'spark', or a Backend as {class_path: ..., init_args: {...}}.",
    )
    find.add_argument(
        "--exp_dir", type=Optional[str], default=None,
        help="The study's folder or cluster-storage URL (default: ./maggy_experiments/<name>-<time>).",
    )
    find.add_argument(
        "--resume", type=Optional[str], default=None,
        help="The folder (or URL) of a study whose driver died or was interrupted: continue it.",
    )
    find.add_function_arguments(search, skip=set(OWN), fail_untyped=False)
    return find


def show_parser() -> Any:
    """The parser of ``lightning-maggy show``."""
    ja = _jsonargparse()
    show = ja.ArgumentParser(description="Prints a study's trials from its journal, also while it runs.")
    show.add_argument("exp_dir", type=str, help="The study's experiment directory.")
    show.add_argument("--follow", action="store_true", help="Redraw every --interval seconds until the study ends.")
    show.add_argument("--interval", type=float, default=1.0, help="Seconds between two redraws with --follow.")
    show.add_argument("--top", type=Optional[int], default=None, help="List only the best N ranked trials.")
    show.add_argument(
        "--scope", type=Optional[str], default=None,
        help="'last' or 'all' (see search()); default: the study's, from result.json, else 'last'.",
    )
    return show


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (see the module docstring)."""
    if os.getcwd() not in sys.path:  # as `python -m` does: a module next to the config imports
        sys.path.insert(0, os.getcwd())
    parser = build_parser()
    cfg = parser.parse_args(argv)  # exits 2 on a bad command line, 0 after --help or --print_config
    try:
        if cfg.subcommand == "search":
            return _search(parser, cfg)
        return _show(cfg.show)
    except BrokenPipeError:  # `lightning-maggy show EXP_DIR | head`: as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # before the search started (search() handles its own Ctrl-C)
        return EXIT_INTERRUPTED


def _fail(command: str, message: str, code: int = EXIT_USAGE) -> int:
    print(f"lightning-maggy {command}: error: {message}", file=sys.stderr, flush=True)
    return code


def import_object(path: str, what: str) -> Any:
    """The object an import path names (``package.module.Name``)."""
    from lightning_maggy.exceptions import ConfigurationError

    module_name, _, name = path.strip().rpartition(".")
    if not module_name or not name:
        raise ConfigurationError(f"{what}={path!r}: expected an import path such as mypkg.models.MyModule.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigurationError(
            f"{what}={path!r}: cannot import {module_name!r} ({err}). Is its folder on PYTHONPATH, "
            "or the current directory?"
        ) from None
    except Exception as err:  # found, but its code fails (a SyntaxError, an error at import)
        where = "".join(traceback.format_exception(type(err), err, err.__traceback__, limit=-3))
        raise ConfigurationError(
            f"{what}={path!r}: importing {module_name!r} failed with {type(err).__name__}: {err}\n{where.rstrip()}"
        ) from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ConfigurationError(f"{what}={path!r}: module {module_name!r} has no {name!r}.") from None


def _search(parser: Any, cfg: Any) -> int:
    from lightning_maggy.exceptions import ConfigurationError, ExperimentError, MaggyError
    from lightning_maggy.experiment import search
    from lightning_maggy.searchspace import Searchspace

    args = cfg.search
    try:  # everything is checked before anything starts
        space = Searchspace(**args.space)
    except (MaggyError, TypeError) as err:
        return _fail("search", f"space: {err}")
    try:
        module = import_object(args.module, "module")
        datamodule = None if args.datamodule is None else import_object(args.datamodule, "datamodule")
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
        init = instantiate(cfg).search  # optimizer, early_stop, backend given as class_path
    except (MaggyError, ValueError, TypeError) as err:
        return _fail("search", str(err))
    names = [n for n in inspect.signature(search).parameters if n not in ("module_or_fn", "space", "datamodule")]
    kwargs = {name: init[name] for name in names}
    try:
        result = search(module, space, datamodule=datamodule, **kwargs)
    except ExperimentError as err:
        return _fail("search", str(err), EXIT_ABORTED)
    except ConfigurationError as err:
        return _fail("search", str(err))
    except MaggyError as err:
        return _fail("search", f"{type(err).__name__}: {err}", EXIT_ABORTED)
    if not kwargs["verbose"]:  # verbose: search() has printed it (on stderr, after the progress bar)
        print(result.summary())
    print(_best_line(result), flush=True)
    if result.stop_reason == "interrupted":
        again = f"interrupted; the same config with --resume {result.exp_dir} continues the study"
        return _fail("search", again, EXIT_INTERRUPTED)
    if result.stop_reason not in ("finished", "timeout"):
        return _fail("search", f"the study {result.stop_reason}: {result.message}", EXIT_ABORTED)
    return 0


def _best_line(result: Any) -> str:
    from lightning_maggy.results import fmt_config

    best = result.best_trial
    if best is None:
        return f"best: none (no trial reported a finite {result.metric}); record: {result.exp_dir}"
    return (
        f"best {result.metric}={result.best_metric:.5g}: trial {best.trial_id} ({best.epochs} epochs) "
        f"{fmt_config(best.config)}; record: {result.exp_dir}"
    )


def _show(args: Any) -> int:
    from lightning_maggy.exceptions import ConfigurationError, JournalError
    from lightning_maggy.storage import fetch_study, is_remote

    remote = is_remote(args.exp_dir)  # a study in cluster storage: read the driver's copy
    try:
        exp = fetch_study(args.exp_dir, "exp_dir") if remote else Path(args.exp_dir)
    except ConfigurationError as err:
        return _fail("show", str(err))
    if not exp.is_dir() and not args.follow:  # --follow waits for a study that is starting
        if remote:
            return _fail("show", f"{args.exp_dir} holds no study (no journal.jsonl): pass the exp_dir a search printed.")
        return _fail("show", f"{exp} is not a directory.")
    if args.scope not in (None, "last", "all"):
        return _fail("show", f"--scope={args.scope!r}: expected 'last' or 'all'.")
    if args.top is not None and args.top < 0:
        return _fail("show", f"--top={args.top}: expected the number of best trials to list (0 or more).")
    last = None
    try:
        while True:
            try:
                if remote and last is not None:
                    fetch_study(args.exp_dir, "exp_dir")
                text, ended = render(exp, args.scope, args.top, url=args.exp_dir if remote else None)
            except (JournalError, ConfigurationError) as err:
                return _fail("show", str(err), EXIT_ABORTED)
            if text is None and not args.follow:
                what = "no events in its journal.jsonl yet" if (exp / "journal.jsonl").is_file() else "no journal.jsonl"
                return _fail("show", f"{exp} holds no study ({what}): pass the exp_dir a search printed.", EXIT_ABORTED)
            text = text or f"waiting for the study in {exp} to start..."
            if not args.follow:
                print(text, flush=True)
                return 0
            if text != last:
                _redraw(text)
                last = text
            if ended:
                return 0
            time.sleep(max(0.05, args.interval))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _redraw(text: str) -> None:
    if sys.stdout.isatty():  # in place: home, clear the screen
        sys.stdout.write("\x1b[H\x1b[2J" + text + "\n\n(following; Ctrl-C to stop)\n")
    else:  # a log: each new state after the previous one
        sys.stdout.write(text + "\n\n")
    sys.stdout.flush()


def render(
    exp_dir: str | os.PathLike[str], scope: str | None = None, top: int | None = None, url: str | None = None
) -> tuple[str | None, bool]:
    """The table ``show`` prints for the study in ``exp_dir``, and whether the study has ended;
    (None, False) while its journal holds no event yet. The journal is read as it is, without
    its lock (a torn last line, a write in progress, is skipped). ``url``: the study's URL, of
    which ``exp_dir`` is the local copy (the table names the URL).

    Raises:
        JournalError: a corrupt line other than the last.
    """
    from lightning_maggy.results import journal_has_events, result_of_journal

    exp = Path(exp_dir)
    if not journal_has_events(exp):  # the study is starting
        return None, False
    result, log = result_of_journal(exp, url=url, scope=scope)
    info = log.experiment or {}
    metric, direction = result.metric, result.direction
    settings = ", ".join(f"{key} {info.get(key)}" for key in ("max_epochs", "num_trials", "timeout", "workers"))
    lines = [
        f"study {info.get('name', '?')}: {metric} ({direction}), {info.get('optimizer', '?')}, {settings}; "
        f"run {log.runs}, {log.elapsed:.0f} s",
        result.summary(top=top, unranked=True),
        _best_line(result),
    ]
    if log.end_reason is None:
        lines.append("not ended: the study is running (if its driver died, search --resume EXP_DIR continues it)")
    return "\n".join(lines), log.end_reason is not None
