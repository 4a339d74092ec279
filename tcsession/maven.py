"""Fetch jars from a Maven-layout repository, verified, cached and pinned, on the control machine.

:func:`resolve` is the only side-effecting entry point: it reads an http(s) repository (Maven
Central by default) with urllib, or a local directory in Maven layout, and writes the cache
and the lock file. Everything else here is plain data.

For every artifact:

1. Cache hit: ``cache_dir/<maven path>`` exists and its SHA-1 and SHA-256 match the lock file
   entry -> used as is, without any network access.
2. Otherwise the jar and its ``.jar.sha1`` sidecar (Maven Central publishes one beside every
   file; it holds ``<hex>`` or ``<hex>  <filename>``) are read from the repository, the SHA-1
   of the bytes must equal the sidecar's, and, when the lock file has an entry for the
   artifact, both digests must equal the entry's.

All-or-nothing: every artifact is fetched and checked before anything is written; only then
are the new jars stored in the cache and the new entries added to the lock file. Any failure
raises :class:`TcsessionError` (one line: the artifact, where tcsession looked, what to do)
and leaves the cache's jars and the lock file as they were, so the deploy stops before any
host is changed.

The lock file (``<stem>.msm.lock`` beside the inventory, e.g. hosts.msm.lock; the caller passes its path) is TOML: one table
per artifact coordinate with ``sha1``, ``sha256`` and the ``source`` it was first fetched
from. Entries are added, never changed: a jar whose digests differ from its entry is refused
until the operator deletes that entry (when the change is intended).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from tcsession.errors import TcsessionError
from tcsession.msm import Artifact

__all__ = [
    "LOCK_NAME",
    "MAVEN_CENTRAL",
    "ResolvedJar",
    "default_cache_dir",
    "lock_path_for",
    "read_lock",
    "resolve",
]

MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
LOCK_SUFFIX = ".msm.lock"  # <inventory stem>.msm.lock beside the inventory: hosts.toml -> hosts.msm.lock
LEGACY_LOCK_NAME = "msm.lock"  # its name before, one per directory; read while the new one is absent
TIMEOUT = 10.0  # seconds, per connection attempt and per read
MAX_JAR_BYTES = 64 * 1024 * 1024
_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
def repo_hint(inventory: str | Path = "hosts.toml") -> str:
    return f"set [msm] maven_repo in {inventory} to a repository or local Maven-layout directory that has it"


@dataclass(frozen=True)
class ResolvedJar:
    artifact: Artifact
    path: Path  # in the cache
    sha1: str
    sha256: str


def default_cache_dir() -> Path:
    """Where the control machine keeps fetched jars: ``$XDG_CACHE_HOME/tcsession/maven``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tcsession" / "maven"


def lock_path_for(inventory_path: str | Path) -> Path:
    """``<stem>.msm.lock`` beside the inventory file (hosts.toml -> hosts.msm.lock), where
    tcsession writes the lock."""
    path = Path(os.path.abspath(inventory_path))
    return path.with_name(path.stem + LOCK_SUFFIX)


def lock_to_read(inventory_path: str | Path) -> tuple[Path, str | None]:
    """The lock file to read for this inventory, and a note when it is the old name: the new
    ``<stem>.msm.lock`` when it exists, else an ``msm.lock`` of before in the same directory (the
    next resolution writes its entries under the new name; the old file is left as it is)."""
    new = lock_path_for(inventory_path)
    old = new.with_name(LEGACY_LOCK_NAME)
    if os.path.lexists(new) or not os.path.lexists(old):
        return new, None
    return old, (f"{old} read: the lock file beside {Path(inventory_path).name} is now {new.name} (named after "
                 f"the inventory); an msm deploy writes it there with every entry: commit {new.name}, then "
                 f"remove {old.name}")


# --------------------------------------------------------------------------- the lock file


def read_lock(lock_path: Path) -> dict[str, dict[str, str]]:
    """The lock file's entries (coordinate -> {"sha1", "sha256", "source"}); {} if there is none."""
    lock_path = Path(lock_path)
    try:
        text = lock_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise TcsessionError(f"{lock_path}: cannot read it ({reason}); fix its permissions or delete it") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TcsessionError(
            f"{lock_path}: not valid TOML ({e}); restore it from version control or delete it "
            f"(tcsession writes a new one)") from None
    entries: dict[str, dict[str, str]] = {}
    for key, entry in doc.items():
        ok = (isinstance(entry, dict) and isinstance(entry.get("sha1"), str) and _SHA1.match(entry["sha1"])
              and isinstance(entry.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]))
        if not ok:
            raise TcsessionError(
                f'{lock_path}: entry "{key}" needs sha1 (40 hex digits) and sha256 (64 hex digits); '
                f"fix it or delete the entry (tcsession re-creates it)")
        entries[key] = {k: str(v) for k, v in entry.items()}
    return entries


def _render_lock(entries: dict[str, dict[str, str]]) -> str:
    lines = [
        "# The msm lock (<inventory>.msm.lock): checksums of the memcached-session-manager jars tcsession fetched "
        "(written by tcsession).",
        "# A jar whose checksums differ from its entry is refused; if a change is intended, delete its entry.",
    ]
    for key in sorted(entries):
        entry = entries[key]
        lines.append("")
        lines.append(f"[{json.dumps(key)}]")
        for field in ("sha1", "sha256", "source"):
            if field in entry:
                lines.append(f"{field} = {json.dumps(entry[field])}")
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, data: bytes, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as e:
        raise TcsessionError(
            f"{path}: cannot write the {what} ({e.strerror or e}); check the directory's permissions "
            f"and free space") from None


# --------------------------------------------------------------------------- fetching


class _Missing(Exception):
    def __init__(self, where: str, detail: str):
        super().__init__(where)
        self.where = where
        self.detail = detail


class _Repo:
    """A repository: http(s) base URL or local directory, with one-line failures."""

    def __init__(self, repo: str, timeout: float, inventory: str | Path = "hosts.toml"):
        self.hint = repo_hint(inventory)
        if not isinstance(repo, str) or not repo.strip():
            raise TcsessionError(f"{inventory}: [msm] maven_repo is empty; {self.hint}")
        self.repo = repo
        self.timeout = timeout
        scheme = urlsplit(repo).scheme.lower() if "://" in repo else ""
        if scheme in ("http", "https"):
            self.url = repo.rstrip("/") + "/"
            self.directory = None
        elif scheme:
            raise TcsessionError(
                f'{inventory}: [msm] maven_repo "{repo}" is not an http(s) URL or a directory; '
                f'use e.g. "{MAVEN_CENTRAL}" or a local directory path')
        else:
            self.url = None
            self.directory = Path(repo).expanduser()

    def where(self, relpath: str) -> str:
        return self.url + relpath if self.url else str(self.directory / relpath)

    def read(self, artifact: Artifact, relpath: str, limit: int) -> bytes:
        if self.directory is not None:
            return self._read_file(artifact, relpath, limit)
        return self._read_url(artifact, relpath, limit)

    def _read_file(self, artifact: Artifact, relpath: str, limit: int) -> bytes:
        if not self.directory.is_dir():
            raise TcsessionError(
                f"{artifact}: the Maven repository directory {self.directory} does not exist; "
                f"{self.hint}")
        path = self.directory / relpath
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise _Missing(str(path), "no such file") from None
        except IsADirectoryError:
            raise _Missing(str(path), "is a directory") from None
        except OSError as e:
            raise TcsessionError(
                f"{artifact}: cannot read {path} ({e.strerror or e}); check its permissions") from None
        if len(data) > limit:
            raise TcsessionError(f"{artifact}: {path} is larger than {limit} bytes; is it the right file?")
        return data

    def _read_url(self, artifact: Artifact, relpath: str, limit: int) -> bytes:
        # urllib (http.client, ssl, email) loaded only to read a repository: 8 ms of every deploy otherwise
        import http.client  # noqa: PLC0415
        import urllib.error  # noqa: PLC0415
        import urllib.request  # noqa: PLC0415

        url = self.url + relpath
        request = urllib.request.Request(url, headers={"User-Agent": "tcsession"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read(limit + 1)
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                raise _Missing(url, f"HTTP {e.code}") from None
            raise TcsessionError(
                f"{artifact}: {url} answered HTTP {e.code} {e.reason}; check the repository "
                f"(access rights, proxy), or {self.hint}") from None
        except urllib.error.URLError as e:
            raise TcsessionError(
                f"{artifact}: cannot reach the Maven repository {self.repo} ({_reason(e.reason)}); "
                f"check the network and proxy settings, or {self.hint}") from None
        except (TimeoutError, socket.timeout):
            raise TcsessionError(
                f"{artifact}: the Maven repository {self.repo} did not answer within {self.timeout:g} s "
                f"({url}); check the network and proxy settings, or {self.hint}") from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            raise TcsessionError(
                f"{artifact}: reading {url} failed ({_reason(e)}); retry, or {self.hint}") from None
        if len(data) > limit:
            raise TcsessionError(f"{artifact}: {url} is larger than {limit} bytes; is it the right file?")
        return data


def _reason(reason: object) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name: {reason.strerror or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = " ".join(str(reason).split())
    return text or type(reason).__name__


def _parse_sha1(artifact: Artifact, where: str, data: bytes, hint: str = repo_hint()) -> str:
    """The digest in a ``.sha1`` sidecar: ``<hex>`` or ``<hex>  <filename>`` (or ``<hex> *file``)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    first = text.split()[0] if text.split() else ""
    if not _SHA1.match(first):
        raise TcsessionError(
            f"{artifact}: {where} does not hold a SHA-1 checksum (40 hex digits); the repository "
            f"is broken: {hint}")
    return first.lower()


def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest()


def _cached(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as e:
        raise TcsessionError(f"{path}: cannot read the cached jar ({e.strerror or e}); fix its permissions or delete it") from None


def resolve(artifacts: Iterable[Artifact], repo: str, cache_dir: Path, lock_path: Path,
            *, timeout: float = TIMEOUT, inventory: str | Path = "hosts.toml",
            read_from: Path | None = None) -> tuple[ResolvedJar, ...]:
    """Every artifact's jar in ``cache_dir``, verified (see the module docstring); in input order.
    The lock is read from ``read_from`` (default ``lock_path``: another is the lock's old name) and
    written to ``lock_path``, with every entry read, when anything was added or it was read elsewhere.

    Raises :class:`TcsessionError` on the first artifact that cannot be resolved, before
    anything is written (all-or-nothing).
    """
    artifacts = list(dict.fromkeys(artifacts))  # drop repeats, keep the order
    cache_dir = Path(cache_dir)
    lock_path = Path(lock_path)
    read_from = Path(read_from) if read_from is not None else lock_path
    lock = read_lock(read_from)
    source = _Repo(repo, timeout, inventory)
    hint = source.hint
    new_jars: list[tuple[Path, bytes]] = []
    new_entries: dict[str, dict[str, str]] = {}
    resolved: list[ResolvedJar] = []

    for artifact in artifacts:
        key = artifact.coordinate
        cache_path = cache_dir / artifact.path
        locked = lock.get(key)
        if locked is not None:
            data = _cached(cache_path)
            if data is not None:
                sha1, sha256 = _digests(data)
                if sha1 == locked["sha1"].lower() and sha256 == locked["sha256"]:
                    resolved.append(ResolvedJar(artifact, cache_path, sha1, sha256))
                    continue
                # a damaged or replaced cache file: fetch it again (checked against the lock below)

        jar_where = source.where(artifact.path)
        sha1_where = jar_where + ".sha1"
        try:
            data = source.read(artifact, artifact.path, MAX_JAR_BYTES)
        except _Missing as m:
            raise TcsessionError(
                f"{artifact}: no jar at {m.where} ({m.detail}); check the coordinates and "
                f"[msm] version, or {hint}") from None
        try:
            sidecar = source.read(artifact, artifact.path + ".sha1", 4096)
        except _Missing as m:
            raise TcsessionError(
                f"{artifact}: no checksum file at {m.where} ({m.detail}), so the jar cannot be "
                f"verified; add {artifact.filename}.sha1 beside the jar (Maven Central publishes one) "
                f"or use a repository that has it") from None
        expected = _parse_sha1(artifact, sha1_where, sidecar, hint)
        sha1, sha256 = _digests(data)
        if sha1 != expected:
            raise TcsessionError(
                f"{artifact}: {jar_where} has SHA-1 {sha1} but {artifact.filename}.sha1 says {expected}: "
                f"a damaged download or a tampered repository; retry, or check the repository "
                f"(tcsession changed nothing)")
        if locked is not None:
            if sha1 != locked["sha1"].lower() or sha256 != locked["sha256"]:
                raise TcsessionError(
                    f"{artifact}: {jar_where} (SHA-256 {sha256}) differs from {read_from} "
                    f"(SHA-256 {locked['sha256']}); if the change is intended, delete its entry in "
                    f"{read_from.name} (tcsession changed nothing)")
        else:
            new_entries[key] = {"sha1": sha1, "sha256": sha256, "source": jar_where}
        new_jars.append((cache_path, data))
        resolved.append(ResolvedJar(artifact, cache_path, sha1, sha256))

    # everything checked: now write
    for path, data in new_jars:
        _atomic_write(path, data, "cached jar")
    if new_entries or read_from != lock_path:
        merged = dict(lock)
        merged.update(new_entries)
        _atomic_write(lock_path, _render_lock(merged).encode("utf-8"), "lock file")
    return tuple(resolved)
