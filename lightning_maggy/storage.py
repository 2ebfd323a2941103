"""Cluster storage: an ``exp_dir`` that is an fsspec URL (``s3://``, ``gs://``, ``abfs://``,
``hdfs://``...), for clusters whose executors share no file system.

Where each part of a study lives when ``exp_dir`` is such a URL:

* **Trial folders** (checkpoints, ``metrics.csv``, ``output.log``, ``hparams.json``, TensorBoard
  events) live at ``<url>/trials/<trial_id>/``. A worker runs each trial run in a scratch folder
  of its own on its local disk (:class:`RemoteTrials`): before the run it downloads the trial's
  folder from the URL (a promoted or re-queued trial finds its checkpoint there, whichever
  executor wrote it), every checkpoint is uploaded as soon as it is committed (so a lost
  executor's trial resumes from its last epoch), and the rest of the folder is uploaded when the
  run ends, before the server hears of it. The scratch copy is then deleted.
* **The journal** stays an append-only file the driver owns, on the driver's local disk (fast,
  fsync'd: object stores have no append), in a local copy of the study folder
  (:func:`local_copy_of`). :class:`StudyMirror` uploads it, with ``experiment.json``, to the URL
  every couple of seconds while it changes and once more at the end, with ``result.json``,
  ``trials.csv`` and the TensorBoard HParams summary. ``resume="s3://..."`` on another machine
  downloads it (:func:`fetch_study`); what the driver appended after the last upload before it
  died is lost, as if it had died that much earlier (the trials re-run from their checkpoints).
* **Fencing** (:mod:`~lightning_maggy.lightning.fence`): the attempt that holds a trial is also
  recorded at ``<url>/trials/<id>/.attempt``; an attempt checks it before each upload and
  gives up the trial when a newer attempt holds it. Object stores have no locks, so a stale
  attempt can still overwrite a checkpoint in the instant between its check and its upload (the
  newer attempt's next epoch replaces it again).

Credentials come from where the filesystem package looks for them (environment variables,
instance roles, its config files, ``fsspec``'s ``FSSPEC_<PROTOCOL>_<OPTION>`` variables); a URL
is recorded in ``experiment.json`` and the journal without any user:password part.

A ``file://`` URL names a local path that every executor shares (NFS, a FUSE mount): it is used
as that path, with no scratch copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning_maggy.exceptions import ConfigurationError, MaggyError
from lightning_maggy.storage_checks import check_bucket as _check_bucket
from lightning_maggy.storage_checks import check_study_url, check_url_form, holds_a_study, redact
from lightning_maggy.storage_checks import reaching as _reaching

__all__ = [
    "RemoteTrials",
    "StoreUnavailable",
    "StudyMirror",
    "check_shared_exp_dir",
    "fetch_study",
    "is_remote",
    "local_copy_of",
    "local_path",
    "open_url",
    "redact",
    "study_exists",
]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")

#: The package that serves a URL scheme, for the install hint.
_PACKAGES = {
    "s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs", "abfss": "adlfs",
    "az": "adlfs", "adl": "adlfs", "hdfs": "pyarrow", "webhdfs": "fsspec", "oci": "ocifs",
}

#: Files of the study folder that the driver uploads while the study runs.
_LIVE_FILES = ("journal.jsonl", "experiment.json")

#: Files in a trial folder that are never uploaded: the local lock, unfinished writes.
_SKIP = re.compile(r"(^|/)\.attempt\.lock$|\.tmp$")

_LOCAL_HOSTS = ("127.", "localhost", "::1", "[::1]")


def _scheme(path: Any) -> str | None:
    match = _URL.match(str(path)) if isinstance(path, (str, os.PathLike)) else None
    return match.group(1).lower() if match else None


def is_remote(path: Any) -> bool:
    """Whether ``path`` is a URL of a filesystem other than the local one (``file://``)."""
    scheme = _scheme(path)
    return scheme is not None and scheme not in ("file", "local")


def local_path(path: str | os.PathLike[str]) -> str:
    """``path`` itself, or the path a ``file://`` URL names."""
    text = os.fspath(path)
    if _scheme(text) in ("file", "local"):
        return urlsplit(text).path or "/"
    return text


def open_url(url: str, what: str = "exp_dir") -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it (no trailing slash).

    Raises:
        ConfigurationError: the filesystem's package is missing (with the ``pip install``
            line), fsspec knows no such protocol, or the URL names no bucket or folder.
    """
    import fsspec

    check_url_form(url, what)
    scheme = _scheme(url) or "file"
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError as err:
        package = _PACKAGES.get(scheme, f"the fsspec implementation of {scheme}://")
        raise ConfigurationError(
            f"{what}={redact(url)!r}: {scheme}:// URLs need a package that is not installed ({err}). "
            f"Install it where the driver and every worker run: pip install {package}"
        ) from None
    except ValueError as err:
        raise ConfigurationError(
            f"{what}={redact(url)!r}: fsspec does not know the {scheme}:// protocol ({err}). Use a "
            "URL such as s3://bucket/path, gs://, abfs://, hdfs://, or a local path."
        ) from None
    return fs, path.rstrip("/")


def local_copy_of(url: str) -> Path:
    """Where the driver keeps its copy of a study whose ``exp_dir`` is ``url`` (the journal,
    ``experiment.json``, results): ``$LIGHTNING_MAGGY_CACHE_DIR`` or
    ``~/.cache/lightning_maggy/studies``, then the URL's scheme, host and path."""
    base = os.environ.get("LIGHTNING_MAGGY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lightning_maggy", "studies"
    )
    parts = urlsplit(redact(url))
    names = [n for n in f"{parts.netloc}/{parts.path}".split("/") if n and n not in (".", "..")]
    if not names:
        names = [hashlib.sha1(url.encode()).hexdigest()[:12]]
    return Path(base, parts.scheme, *names)


def _remote_size(fs: Any, path: str) -> int | None:
    try:
        return int(fs.size(path))
    except FileNotFoundError:
        return None


def study_exists(url: str) -> bool:
    """Whether the URL or the driver's copy of it holds a journal.

    Raises:
        ConfigurationError: the URL cannot be reached, or cannot hold a study (a file, a
            filesystem the workers do not share), before anything is written.
    """
    fs, root = open_url(url)
    with _reaching(url, "exp_dir"):
        _check_bucket(fs, root, url, "exp_dir")
        check_study_url(fs, root, url, "exp_dir", local_copy_of(url))
        remote = _remote_size(fs, f"{root}/journal.jsonl") is not None
    return remote or (local_copy_of(url) / "journal.jsonl").exists()


def fetch_study(url: str, what: str = "resume") -> Path:
    """The driver's local copy of the study at ``url``, brought up to date for a resume: the
    URL's journal and ``experiment.json`` are downloaded unless the local journal is at least as
    long (the same machine's copy, which the last upload may lag behind). Returns the folder.
    For ``resume=`` (the study goes on there) the URL is checked as a new study's is."""
    fs, root = open_url(url, what)
    local = local_copy_of(url)
    journal = local / "journal.jsonl"
    with _reaching(url, what):
        _check_bucket(fs, root, url, what)
        if what == "resume":
            check_study_url(fs, root, url, what, local)
        remote_size = _remote_size(fs, f"{root}/journal.jsonl")
        if remote_size is not None and (not journal.exists() or journal.stat().st_size < remote_size):
            local.mkdir(parents=True, exist_ok=True)
            for name in _LIVE_FILES:
                with contextlib.suppress(FileNotFoundError):
                    fs.get_file(f"{root}/{name}", str(local / name))
    return local


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class _Uploads:
    """Uploads files of the local folder ``local`` to the same place under ``remote``, each only
    when it changed (size, modification time) since it was last uploaded or :meth:`known`;
    never the local lock or an unfinished write (``_SKIP``)."""

    def __init__(self, fs: Any, local: str, remote: str) -> None:
        self.fs, self.local, self.remote = fs, local, remote
        self._stamps: dict[str, tuple[int, int]] = {}

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.local).replace(os.sep, "/")

    def known(self, path: str) -> None:
        """``path`` holds what the remote copy holds (it was just downloaded)."""
        self._stamps[self._rel(path)] = _stamp(path)

    def put(self, path: str) -> None:
        rel = self._rel(path)
        if _SKIP.search(rel) or self._stamps.get(rel) == _stamp(path):
            return
        self.fs.put_file(path, f"{self.remote}/{rel}")
        self.known(path)


class StudyMirror:
    """Uploads the driver's local study folder to its URL: the journal and ``experiment.json``
    every ``interval`` seconds while they change, and everything at :meth:`close`."""

    def __init__(self, url: str, local: Path, interval: float = 2.0) -> None:
        self.url = url
        self.local = Path(local)
        self.interval = interval
        self.fs, self.root = open_url(url)
        self.error: BaseException | None = None
        self._uploads = _Uploads(self.fs, str(self.local), self.root)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="maggy-study-mirror", daemon=True)

    def start(self) -> StudyMirror:
        with _reaching(self.url, "exp_dir"):
            self.fs.makedirs(self.root, exist_ok=True)
            self.push(_LIVE_FILES)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.push(_LIVE_FILES)
            except Exception as err:  # noqa: BLE001 - a failed upload is retried next time
                if self.error is None:  # said once; the study goes on, its record is local
                    print(
                        f"lightning_maggy: uploading the journal to {redact(self.url)} failed "
                        f"({type(err).__name__}: {err}); retrying every {self.interval:g} s. The "
                        f"record is complete on this machine, in {self.local}.",
                        file=sys.stderr, flush=True,
                    )
                self.error = err

    def push(self, names: Any = None) -> None:
        """Uploads the named top-level entries (default: every file and folder) that changed;
        never a folder that holds another study's copy (a study at a bucket's root holds the
        copies of the studies under it, which their own drivers upload)."""
        with self._lock:
            entries = list(names) if names is not None else sorted(os.listdir(self.local))
            for name in entries:
                path = self.local / name
                if path.is_dir() and not holds_a_study(path):
                    for file in sorted(p for p in path.rglob("*") if p.is_file()):
                        self._uploads.put(str(file))
                elif path.is_file():
                    self._uploads.put(str(path))

    def close(self) -> None:
        """Stops the periodic uploads and uploads everything that changed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.push()


class StoreUnavailable(MaggyError):
    """The study's store (its ``exp_dir`` URL) failed while a worker read or wrote a trial's
    folder there (the endpoint went down, credentials expired): every trial would hit it, so
    the worker says so and the study stops, resumable (see :mod:`lightning_maggy.lightning.disk`)."""


@contextlib.contextmanager
def _in_store(url: str, doing: str, trial_id: str) -> Any:
    """Turns a failure of the store under ``doing`` into :class:`StoreUnavailable`, naming it."""
    try:
        yield
    except MaggyError:
        raise
    except Exception as err:
        raise StoreUnavailable(
            f"the study's store {redact(url)} failed while {doing} trial {trial_id}'s folder "
            f"({type(err).__name__}: {err})"
        ) from err


class RemoteTrials:
    """A worker's side of trial folders at a URL: each run gets a scratch copy on local disk
    (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = open_url(url)
        self.scratch = tempfile.mkdtemp(prefix="lightning_maggy-trials-")
        self._uploads: _Uploads | None = None  # the checked-out trial's folder
        self._recorded: dict[int, float] = {}

    def remote_dir(self, trial_id: str) -> str:
        return f"{self.root}/trials/{trial_id}"

    def checkout(self, trial_id: str) -> tuple[str, bool]:
        """A fresh local copy of the trial's folder (without its old TensorBoard event files,
        which the next run does not append to); and whether the trial had no folder yet."""
        with _in_store(self.url, "downloading", trial_id):
            return self._checkout(trial_id)

    def _checkout(self, trial_id: str) -> tuple[str, bool]:
        local = os.path.join(self.scratch, "trials", trial_id)
        shutil.rmtree(local, ignore_errors=True)
        os.makedirs(local)
        remote = self.remote_dir(trial_id)
        self._uploads = _Uploads(self.fs, local, remote)
        try:
            listing = self.fs.find(remote)
        except FileNotFoundError:
            listing = []
        for path in listing:
            rel = path[len(remote) + 1:]
            if not rel or rel.startswith("tensorboard/"):
                continue
            target = os.path.join(local, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            self.fs.get_file(path, target)
            self._uploads.known(target)
        self._recorded = _read_metrics(os.path.join(local, "metrics.csv"))
        return local, not listing

    def unrecorded(self, epochs_done: int) -> list[tuple[int, float]]:
        """The reports of the checked-out trial's ``metrics.csv`` from epoch ``epochs_done`` on,
        as long as they follow each other: what its checkpoint holds beyond a record of
        ``epochs_done`` epochs."""
        out = []
        epoch = epochs_done
        while epoch in self._recorded:
            out.append((epoch, self._recorded[epoch]))
            epoch += 1
        return out

    def holder(self, trial_id: str) -> int:
        """The attempt recorded at the URL as holding the trial (0 if none)."""
        from lightning_maggy.lightning.fence import FENCE_NAME

        try:
            return int(self.fs.cat_file(f"{self.remote_dir(trial_id)}/{FENCE_NAME}").decode().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def claim(self, trial_id: str, attempt: int) -> bool:
        """Records ``attempt`` as the trial's holder at the URL; False if a newer one holds it."""
        from lightning_maggy.lightning.fence import FENCE_NAME

        with _in_store(self.url, "claiming", trial_id):
            if self.holder(trial_id) > attempt:
                return False
            self.fs.pipe_file(f"{self.remote_dir(trial_id)}/{FENCE_NAME}", str(attempt).encode())
        return True

    def publish(self, trial_id: str, paths: list[str], attempt: int) -> bool:
        """Uploads files of the checked-out trial (a committed checkpoint, ``metrics.csv``) that
        changed; False, without uploading, if a newer attempt holds the trial."""
        assert self._uploads is not None, "publish() before checkout()"
        with _in_store(self.url, "uploading to", trial_id):
            if self.holder(trial_id) > attempt:
                return False
            for path in paths:
                if os.path.exists(path):
                    self._uploads.put(path)
        return True

    def checkin(self, trial_id: str, attempt: int) -> bool:
        """Uploads what changed in the checked-out trial's local folder (unless a newer attempt
        holds the trial), then deletes the local copy. False if the upload was refused."""
        assert self._uploads is not None, "checkin() before checkout()"
        local = self._uploads.local
        try:
            with _in_store(self.url, "uploading to", trial_id):
                if self.holder(trial_id) > attempt:
                    return False
                for dirpath, _, files in os.walk(local):
                    for name in sorted(files):
                        self._uploads.put(os.path.join(dirpath, name))
            return True
        finally:
            shutil.rmtree(local, ignore_errors=True)
            self._uploads = None

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _read_metrics(path: str) -> dict[int, float]:
    """epoch -> value of a trial's ``metrics.csv`` (the last row of an epoch wins)."""
    out: dict[int, float] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            next(fh, None)  # the header
            for line in fh:
                fields = line.strip().split(",")
                with contextlib.suppress(ValueError, IndexError):
                    out[int(fields[0])] = float(fields[1])
    except FileNotFoundError:
        pass
    return out


def _master_is_local(master: str) -> bool:
    master = master.strip()
    if master.startswith(("local", "local-cluster")):
        return True
    if master.startswith("spark://"):
        hosts = [h.rsplit(":", 1)[0] for h in master[len("spark://"):].split(",")]
        return all(h.startswith(_LOCAL_HOSTS) for h in hosts)
    return False


def check_shared_exp_dir(exp_dir: str | os.PathLike[str] | None, master: str | None) -> None:
    """Refuses a local ``exp_dir`` (or the default one) when the Spark master runs executors on
    other machines, which would each write trial folders to their own disk.

    A master is local when it is ``local[...]`` or a ``spark://`` master on a loopback address.
    ``exp_dir`` is fine when it is a URL (``s3://``...), a ``file://`` URL (a path the user
    declares shared by every executor), or under ``/dbfs/`` (Databricks' shared mount).

    Raises:
        ConfigurationError: saying what to pass instead.
    """
    if master is None or _master_is_local(master):
        return
    if exp_dir is not None and (_scheme(exp_dir) is not None or os.fspath(exp_dir).startswith("/dbfs/")):
        return
    shown = "the default ./maggy_experiments/..." if exp_dir is None else repr(os.fspath(exp_dir))
    path = "/shared/path" if exp_dir is None else os.path.abspath(os.fspath(exp_dir))
    raise ConfigurationError(
        f"exp_dir is {shown}, a local path, but the Spark master {master!r} runs executors on other "
        "machines: each would write its trials' checkpoints to its own disk, where a promoted or "
        "resumed trial on another executor cannot find them. Pass a URL that every executor can "
        "reach: exp_dir='s3://bucket/path' (pip install s3fs), 'gs://...' (gcsfs), 'abfs://...' "
        f"(adlfs) or 'hdfs://...' (pyarrow); or, if the path is a mount every executor shares (NFS), "
        f"say so with exp_dir='file://{path}'."
    )
