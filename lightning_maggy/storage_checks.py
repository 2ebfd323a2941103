"""The checks an ``exp_dir`` (or ``resume=``) URL passes before a study starts, each refusal a
:class:`~lightning_maggy.exceptions.ConfigurationError` that says what is wrong and how to fix
it: the store answers (endpoint, credentials), the bucket exists, the URL is not a file, and its
filesystem is one the workers (other processes) share."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lightning_maggy.exceptions import ConfigurationError

#: Filesystems that live in one process's memory: workers (other processes) cannot see them.
_PROCESS_LOCAL = ("memory",)


def redact(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _hint(err: BaseException) -> str:
    """What to check for a storage error, from its kind (each filesystem package raises its own)."""
    name = type(err).__name__
    if isinstance(err, PermissionError) or "Credential" in name or "AccessDenied" in name:
        return ("access was refused or no credentials were found: check the credentials (environment "
                "variables, instance role or the filesystem package's config) where the driver and the "
                "workers run, and that they may read and write this bucket and path")
    if isinstance(err, (ConnectionError, TimeoutError)) or "Connect" in name or "Endpoint" in name or "Timeout" in name:
        return ("the store did not answer: check the network and the endpoint (e.g. AWS_ENDPOINT_URL for an "
                "S3-compatible store) where the driver and the workers run")
    return ("check the URL, that the bucket or folder exists, and the credentials (environment variables, "
            "instance role or the filesystem package's config) where the driver and the workers run")


@contextlib.contextmanager
def reaching(url: str, what: str) -> Iterator[None]:
    """Turns a storage error (credentials, network, permissions) into a ConfigurationError."""
    try:
        yield
    except ConfigurationError:
        raise
    except Exception as err:  # noqa: BLE001 - each filesystem package raises its own errors
        raise ConfigurationError(
            f"{what}={redact(url)!r} cannot be reached ({type(err).__name__}: {err}): {_hint(err)}."
        ) from err


def check_bucket(fs: Any, root: str, url: str, what: str) -> None:
    """An object store's bucket (container) must exist: writing into a missing one would
    create it on some stores (with default settings) and fail on others. Asked with ``info``,
    not ``exists``, which answers False for an unreachable store or refused credentials too."""
    if root.startswith("/"):  # a file system with a root (HDFS, ...): folders are made as needed
        return
    bucket = root.split("/", 1)[0]
    try:
        fs.info(bucket)
    except FileNotFoundError:
        raise ConfigurationError(
            f"{what}={redact(url)!r}: the bucket {bucket!r} does not exist. Create it first, or check "
            "the URL."
        ) from None
    except PermissionError:  # credentials limited to a prefix: the requests under it tell
        return


def check_study_url(fs: Any, root: str, url: str, what: str, local: Path) -> None:
    """A URL a study is written to: its filesystem is shared by processes, it names no file in
    the store, and the driver's copy of it (``local``) can be a folder."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in _PROCESS_LOCAL:
        raise ConfigurationError(
            f"{what}={redact(url)!r}: a {protocol}:// filesystem lives in one process's memory, and the "
            "workers run in processes of their own: their trial folders (checkpoints, metrics.csv) "
            "would be lost. Pass a local path, a file:// URL or a shared store (s3://, gs://, abfs://...)."
        )
    if root and fs.isfile(root):
        raise ConfigurationError(
            f"{what}={redact(url)!r} is a file in the store, not a folder: pass the URL of a new (or "
            "empty) folder for the study's record."
        )
    blocked = next((p for p in (local, *local.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ConfigurationError(
            f"{what}={redact(url)!r}: the driver's copy of the study, {local}, cannot be a folder: "
            f"{blocked} is a file. Pass another URL, or set LIGHTNING_MAGGY_CACHE_DIR to another folder."
        )


def holds_a_study(path: str | os.PathLike[str]) -> bool:
    """Whether the folder holds a study's journal at any depth (another study's driver copy)."""
    return any(Path(path).rglob("journal.jsonl"))


def check_url_form(url: str, what: str) -> None:
    """A URL must name a place (``s3://`` alone, which a trailing-slash strip turns into
    ``s3:``, would be read as a local folder named ``s3:``), and fsspec's protocols are
    lowercase (``S3://`` is no protocol it knows)."""
    parts = urlsplit(url.strip())
    scheme = url.strip().split(":", 1)[0]
    if len(parts.scheme) > 1 and not parts.netloc and not parts.path.strip("/"):
        shown = url.strip() + ("//" if url.strip().endswith(":") else "")
        raise ConfigurationError(
            f"{what}={redact(shown)!r} names no bucket or folder: pass a URL such as "
            f"'{scheme.lower()}://bucket/studies/name'."
        )
    if len(parts.scheme) > 1 and scheme != scheme.lower():
        raise ConfigurationError(
            f"{what}={redact(url)!r}: fsspec's URL protocols are lowercase; pass "
            f"{scheme.lower() + url.strip()[len(scheme):]!r}."
        )
