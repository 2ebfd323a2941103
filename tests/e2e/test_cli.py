"""The ``lightning-maggy`` command line, run as a user runs it (``python -m lightning_maggy``, the
console script's entry point): a real search from a YAML file, ``--print_config``, bad configs
refused before anything starts, and ``show`` on a finished and on a running study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("jsonargparse")
yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

STUDY = """\
module: tiny_models.TinyClassifier
datamodule: tiny_models.BlobsDataModule
space:
  lr: {type: double, low: 1.0e-2, high: 0.5, log: true}
  hidden: {type: integer, low: 4, high: 32}
metric: val_acc
direction: max
optimizer: random
num_trials: 9
max_epochs: 1
workers: 1
seed: 0
trainer_kwargs: {accelerator: cpu}
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(TESTS), env.get("PYTHONPATH")) if p)
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lightning_maggy", *args]


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(*args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _study(tmp: Path, text: str = STUDY, name: str = "study.yaml") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A study of 3 trials (the YAML says 9: the command line overrides it), run to its end."""
    tmp = tmp_path_factory.mktemp("cli")
    _study(tmp)
    proc = cli("search", "--config", "study.yaml", "--num_trials", "3", "--exp_dir", "exp", cwd=tmp)
    return proc, tmp / "exp"


def test_search_runs_a_study_from_a_yaml_file_with_command_line_overrides(finished) -> None:
    proc, exp = finished
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((exp / "result.json").read_text())
    assert result["stop_reason"] == "finished" and len(result["trials"]) == 3  # --num_trials 3, not 9
    assert [t["state"] for t in result["trials"]] == ["COMPLETED"] * 3
    experiment = json.loads((exp / "experiment.json").read_text())
    assert experiment["optimizer"] == "RandomSearch" and experiment["seed"] == 0 and experiment["max_epochs"] == 1
    assert experiment["space"]["lr"] == {"type": "DOUBLE", "low": 0.01, "high": 0.5, "log": True}
    # The summary (search() prints it on stderr after its progress bar), then the best trial.
    assert "3 trials (3 completed); stop reason: finished" in proc.stderr
    assert f"best val_acc={result['best_metric']:.5g}: trial {result['best_trial_id']}" in proc.stdout


def test_print_config_prints_yaml_that_round_trips(tmp_path: Path) -> None:
    _study(tmp_path, STUDY + f"exp_dir: {tmp_path / 'exp'}\n")
    asha = '{"class_path": "lightning_maggy.optimizers.ASHA", "init_args": {"reduction_factor": 2}}'
    first = cli("search", "--config", "study.yaml", "--num_trials", "7", "--optimizer", asha, "--print_config",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    config = yaml.safe_load(first.stdout)
    assert config["num_trials"] == 7 and config["max_epochs"] == 1 and config["module"] == "tiny_models.TinyClassifier"
    assert config["space"] == yaml.safe_load(STUDY)["space"]
    assert config["optimizer"]["class_path"] == "lightning_maggy.optimizers.ASHA"
    assert config["optimizer"]["init_args"]["reduction_factor"] == 2
    assert {"timeout", "heartbeat_timeout", "scope", "resume", "backend"} <= set(config)  # all of search()'s
    _study(tmp_path, first.stdout, "printed.yaml")
    second = cli("search", "--config", "printed.yaml", "--print_config", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert not (tmp_path / "exp").exists()  # printing starts nothing


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        ("lr: {type: double, low: 0.1}", ["space: Hyperparameter 'lr': missing high", "{type: double, low: <number>"]),
        ("lr: {type: float, low: 0.1, high: 1.0}", ["'lr'", "type 'float' is not one of double, integer"]),
        ("hidden: {type: integer, low: 4.5, high: 32}", ["'hidden'", "bounds must be ints"]),
        ("act: relu", ["'act'", "cannot understand 'relu'"]),
    ],
)
def test_a_bad_space_entry_fails_before_anything_starts(tmp_path: Path, entry: str, fragments: list[str]) -> None:
    text = STUDY.replace("  hidden: {type: integer, low: 4, high: 32}\n", f"  {entry}\n")
    _study(tmp_path, text + f"exp_dir: {tmp_path / 'exp'}\n")
    proc = cli("search", "--config", "study.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("lightning-maggy search: error: space: "), proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "exp").exists()


def test_an_unknown_key_or_module_is_a_usage_error(tmp_path: Path) -> None:
    _study(tmp_path, STUDY.replace("num_trials:", "num_trails:") + f"exp_dir: {tmp_path / 'exp'}\n")
    typo = cli("search", "--config", "study.yaml", cwd=tmp_path)
    assert typo.returncode == 2 and "num_trails" in typo.stderr, typo.stderr
    _study(tmp_path, STUDY + f"exp_dir: {tmp_path / 'exp'}\n")
    missing = cli("search", "--config", "study.yaml", "--module", "json.NoSuchModule", cwd=tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert "module='json.NoSuchModule': module 'json' has no 'NoSuchModule'" in missing.stderr
    unknown = cli("search", "--config", "study.yaml", "--module", "json.dumps", "--datamodule", "no_such_package.Data",
                  cwd=tmp_path)
    assert unknown.returncode == 2, unknown.stderr
    assert "datamodule='no_such_package.Data': cannot import 'no_such_package'" in unknown.stderr
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('cannot load data at import')\n")
    broken = cli("search", "--config", "study.yaml", "--module", "broken_models.Net", cwd=tmp_path)
    assert broken.returncode == 2, broken.stderr  # found but failing: refused too, with where it failed
    assert ("module='broken_models.Net': importing 'broken_models' failed with RuntimeError: cannot load data "
            "at import") in broken.stderr and "broken_models.py\", line 1" in broken.stderr
    assert not (tmp_path / "exp").exists()


def test_show_prints_the_table_of_a_finished_study_and_tolerates_a_torn_last_line(finished, tmp_path: Path) -> None:
    proc, exp = finished
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((exp / "result.json").read_text())
    shown = cli("show", str(exp), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "study TinyClassifier: val_acc (max), RandomSearch" in out
    assert "3 trials (3 completed); stop reason: finished" in out
    for trial in result["trials"]:
        row = next(line for line in out.splitlines() if line.startswith(trial["trial_id"]))
        assert row.split()[1:4] == ["COMPLETED", "1", f"{trial['final_metric']:.5g}"]
    assert f"best val_acc={result['best_metric']:.5g}: trial {result['best_trial_id']}" in out
    assert "not ended" not in out
    # A copy whose last line was torn in the middle of a write reads the same.
    torn = tmp_path / "torn"
    torn.mkdir()
    shutil.copy(exp / "journal.jsonl", torn / "journal.jsonl")
    shutil.copy(exp / "result.json", torn / "result.json")
    with open(torn / "journal.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"event":"report","time":17')
    again = cli("show", str(torn), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == out.replace(str(exp), str(torn))
    # A folder that is no study says what it lacks.
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = cli("show", str(empty), cwd=tmp_path)
    assert refused.returncode != 0 and f"{empty} holds no study (no journal.jsonl)" in refused.stderr


def test_show_reads_a_running_study_and_follow_ends_with_it(tmp_path: Path) -> None:
    sleepy = "  epoch_sleep: {type: discrete, values: [1.0]}\n"  # TinyClassifier sleeps after each epoch
    slow = STUDY.replace("  hidden: {type: integer, low: 4, high: 32}\n", sleepy)
    _study(tmp_path, slow.replace("max_epochs: 1", "max_epochs: 2"))
    exp = tmp_path / "exp"
    search = subprocess.Popen(
        _cmd("search", "--config", "study.yaml", "--num_trials", "3", "--exp_dir", str(exp), "--verbose", "false"),
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        live = None
        while time.monotonic() < deadline and search.poll() is None:
            journal = exp / "journal.jsonl"
            if journal.exists() and '"state":"RUNNING"' in journal.read_text(encoding="utf-8"):
                shown = cli("show", str(exp), cwd=tmp_path)
                assert shown.returncode == 0, shown.stderr
                if " RUNNING " in shown.stdout:
                    live = shown.stdout
                    break
            time.sleep(0.3)
        assert live is not None, "show never saw a RUNNING trial"
        assert "stop reason: running" in live and "not ended: the study is running" in live
        assert search.poll() is None  # the study is still running: --follow starts on a live study
        follow = cli("show", str(exp), "--follow", "--interval", "0.5", cwd=tmp_path, timeout=180)
        assert follow.returncode == 0, follow.stderr
        frames = follow.stdout.strip().split("\n\n")
        assert any(" RUNNING " in frame for frame in frames[:-1])
        assert "3 trials (3 completed); stop reason: finished" in frames[-1] and "not ended" not in frames[-1]
        out, err = search.communicate(timeout=60)
        assert search.returncode == 0, err[-3000:]
        assert "3 trials (3 completed); stop reason: finished" in out  # not verbose: on stdout
    finally:
        if search.poll() is None:
            search.kill()
            search.communicate()


def test_an_aborted_study_exits_1_with_the_reason(tmp_path: Path) -> None:
    _study(tmp_path)
    proc = cli("search", "--config", "study.yaml", "--metric", "val_nothing", "--num_trials", "2", "--exp_dir", "exp",
               "--verbose", "false", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith(
        "lightning-maggy search: error: the search was aborted: MaggyCallback is conditioned on metric 'val_nothing'"
    ), proc.stderr[-3000:]
    assert json.loads((tmp_path / "exp" / "result.json").read_text())["stop_reason"] == "aborted"


def test_the_command_line_declares_every_argument_of_search() -> None:
    import inspect

    from lightning_maggy.cli import search_parser
    from lightning_maggy.experiment import search

    parser = search_parser()
    defaults = parser.get_defaults()
    expected = set(inspect.signature(search).parameters) - {"module_or_fn"} | {"module"}
    assert expected <= set(vars(defaults)), expected - set(vars(defaults))
    for name, param in inspect.signature(search).parameters.items():
        if param.default is not inspect.Parameter.empty and name != "datamodule":
            assert defaults[name] == param.default, name


def test_null_folders_on_the_command_line_are_none_not_the_string_none() -> None:
    from lightning_maggy.cli import search_parser

    parser = search_parser()
    base = ["--module", "m.M", "--space", '{"x": {"type": "double", "low": 0, "high": 1}}', "--metric", "m",
            "--max_epochs", "1"]
    cfg = parser.parse_args([*base, "--exp_dir", "null", "--resume", "null"])
    assert cfg.exp_dir is None and cfg.resume is None
    cfg = parser.parse_args([*base, "--exp_dir", "runs/a", "--resume", "s3://bucket/study"])
    assert (cfg.exp_dir, cfg.resume) == ("runs/a", "s3://bucket/study")
