"""The jar resolver (tcsession.maven) against real repositories: no mocks.

Each test builds a Maven-layout repository in a temporary directory holding STAND-IN jars:
small zip files made here with zipfile (a manifest and a text file saying they are stand-ins),
never the real memcached-session-manager jars (Maven Central is not reachable from the test
machine, and the resolver does not care what is inside a jar). HTTP tests serve that directory
with http.server on 127.0.0.1 in a thread; directory tests point the resolver at it directly.
"""

from __future__ import annotations

import functools
import hashlib
import io
import socket
import threading
import time
import tomllib
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tcsession.errors import TcsessionError
from tcsession.maven import default_cache_dir, lock_path_for, lock_to_read, read_lock, resolve

LOCK_NAME = "hosts.msm.lock"
from tcsession.msm import Artifact, jar_set

CORE = Artifact("de.javakaffee.msm", "memcached-session-manager", "2.3.2")
TC9 = Artifact("de.javakaffee.msm", "memcached-session-manager-tc9", "2.3.2")
SPY = Artifact("net.spy", "spymemcached", "2.12.3")
MISSING = Artifact("de.javakaffee.msm", "msm-kryo-serializer", "2.3.2")


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # the test servers are on 127.0.0.1: never send these requests through a proxy
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def stand_in_jar(artifact: Artifact, variant: str = "") -> bytes:
    """A small, deterministic zip standing in for the artifact's jar (NOT the real jar)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (
            ("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: tcsession tests (stand-in)\r\n\r\n"),
            ("STAND-IN.txt", f"Stand-in for {artifact.coordinate}{variant}, built by tcsession's tests; not the real jar.\n"),
        ):
            z.writestr(zipfile.ZipInfo(name, date_time=(2018, 11, 11, 0, 0, 0)), text)
    return buf.getvalue()


def publish(root: Path, artifact: Artifact, data: bytes | None = None, sidecar: str | bytes | None = "named") -> bytes:
    """Put a stand-in jar (and its .sha1 sidecar, in Maven Central's formats) into a repository dir."""
    data = stand_in_jar(artifact) if data is None else data
    path = root / artifact.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = hashlib.sha1(data).hexdigest()
    side = path.with_name(path.name + ".sha1")
    if sidecar == "named":
        side.write_text(f"{digest}  {artifact.filename}\n")
    elif sidecar == "plain":
        side.write_text(digest)
    elif sidecar == "upper":
        side.write_text(digest.upper() + "\n")
    elif isinstance(sidecar, bytes):
        side.write_bytes(sidecar)
    elif side.exists():
        side.unlink()
    return data


class Server:
    """http.server serving a directory on 127.0.0.1, in a thread; records the paths asked for."""

    def __init__(self, root: Path):
        requests = self.requests = []

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.running = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.running = False


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "www" / "maven2"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def server(repo):
    s = Server(repo.parent)  # the repository is at <url>/maven2
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def lock(tmp_path) -> Path:
    return tmp_path / "inventory" / LOCK_NAME


def files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def check_resolved(result, artifacts, cache, published):
    assert [r.artifact for r in result] == list(artifacts)
    for r in result:
        data = published[r.artifact]
        assert r.path == cache / r.artifact.path
        assert r.path.read_bytes() == data
        assert r.sha1 == hashlib.sha1(data).hexdigest()
        assert r.sha256 == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("suffix", ["", "/"])
def test_resolve_over_http(repo, server, cache, lock, suffix):
    published = {a: publish(repo, a, sidecar=s) for a, s in ((CORE, "named"), (TC9, "plain"), (SPY, "upper"))}
    result = resolve([CORE, TC9, SPY], server.url + "/maven2" + suffix, cache, lock)
    check_resolved(result, [CORE, TC9, SPY], cache, published)
    assert f"/maven2/{CORE.path}" in server.requests and f"/maven2/{CORE.path}.sha1" in server.requests
    assert not any("//" in p for p in server.requests)
    entries = tomllib.loads(lock.read_text())
    assert set(entries) == {a.coordinate for a in published}
    for a, data in published.items():
        assert entries[a.coordinate]["sha1"] == hashlib.sha1(data).hexdigest()
        assert entries[a.coordinate]["sha256"] == hashlib.sha256(data).hexdigest()
        assert entries[a.coordinate]["source"] == f"{server.url}/maven2/{a.path}"
    assert read_lock(lock) == entries


@pytest.mark.parametrize("suffix", ["", "/"])
def test_resolve_from_directory(repo, cache, lock, suffix):
    published = {a: publish(repo, a) for a in (CORE, TC9)}
    result = resolve([CORE, TC9], str(repo) + suffix, cache, lock)
    check_resolved(result, [CORE, TC9], cache, published)
    assert read_lock(lock)[CORE.coordinate]["source"] == str(repo / CORE.path)


def test_cache_and_lock_are_used_without_network(repo, server, cache, lock):
    published = {a: publish(repo, a) for a in (CORE, SPY)}
    url = server.url + "/maven2"
    resolve([CORE, SPY], url, cache, lock)
    lock_bytes = lock.read_bytes()
    server.stop()  # the repository is gone now
    result = resolve([CORE, SPY], url, cache, lock)
    check_resolved(result, [CORE, SPY], cache, published)
    assert lock.read_bytes() == lock_bytes


def test_damaged_cache_file_is_fetched_again(repo, server, cache, lock):
    published = {CORE: publish(repo, CORE)}
    url = server.url + "/maven2"
    resolve([CORE], url, cache, lock)
    (cache / CORE.path).write_bytes(b"truncated")
    server.requests.clear()
    check_resolved(resolve([CORE], url, cache, lock), [CORE], cache, published)
    assert f"/maven2/{CORE.path}" in server.requests


def test_new_artifacts_are_added_to_the_lock(repo, cache, lock):
    publish(repo, CORE)
    resolve([CORE], str(repo), cache, lock)
    first = read_lock(lock)
    publish(repo, TC9)
    resolve([CORE, TC9, CORE], str(repo), cache, lock)  # repeats are resolved once
    second = read_lock(lock)
    assert second[CORE.coordinate] == first[CORE.coordinate] and TC9.coordinate in second


def test_whole_msm_jar_set_resolves(repo, server, cache, lock):
    artifacts = jar_set(10, "kryo").artifacts
    published = {a: publish(repo, a) for a in artifacts}
    result = resolve(artifacts, server.url + "/maven2/", cache, lock)
    check_resolved(result, artifacts, cache, published)
    assert len(read_lock(lock)) == len(artifacts)


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("where", ["http", "dir"])
def test_missing_jar(repo, server, cache, lock, where):
    publish(repo, CORE)
    base = server.url + "/maven2" if where == "http" else str(repo)
    with pytest.raises(TcsessionError) as err:
        resolve([CORE, MISSING], base, cache, lock)
    msg = one_line(err)
    assert msg.startswith(f"{MISSING.coordinate}: no jar at ")
    assert ("(HTTP 404)" if where == "http" else "(no such file)") in msg
    assert MISSING.path in msg and "maven_repo" in msg
    assert files(cache) == [] and not lock.exists()  # all-or-nothing


@pytest.mark.parametrize("where", ["http", "dir"])
def test_missing_sha1(repo, server, cache, lock, where):
    publish(repo, CORE, sidecar=None)
    base = server.url + "/maven2" if where == "http" else str(repo)
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], base, cache, lock)
    msg = one_line(err)
    assert msg.startswith(f"{CORE.coordinate}: no checksum file at ") and f"{CORE.filename}.sha1" in msg
    assert files(cache) == [] and not lock.exists()


@pytest.mark.parametrize("where", ["http", "dir"])
def test_sha1_mismatch(repo, server, cache, lock, where):
    publish(repo, CORE, sidecar=hashlib.sha1(b"something else").hexdigest().encode() + b"\n")
    base = server.url + "/maven2" if where == "http" else str(repo)
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], base, cache, lock)
    msg = one_line(err)
    assert msg.startswith(f"{CORE.coordinate}: ") and "SHA-1" in msg and hashlib.sha1(b"something else").hexdigest() in msg
    assert files(cache) == [] and not lock.exists()


def test_malformed_sha1_sidecar(repo, cache, lock):
    publish(repo, CORE, sidecar=b"<html>not found</html>")
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], str(repo), cache, lock)
    assert "does not hold a SHA-1" in one_line(err)


def test_lock_mismatch(repo, server, cache, lock):
    url = server.url + "/maven2"
    publish(repo, CORE)
    resolve([CORE], url, cache, lock)
    lock_bytes = lock.read_bytes()
    # the repository now serves other bytes (with a matching .sha1), and the cache is gone
    changed = publish(repo, CORE, stand_in_jar(CORE, " (rebuilt)"))
    for p in files(cache):
        p.unlink()
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], url, cache, lock)
    msg = one_line(err)
    assert msg.startswith(f"{CORE.coordinate}: ")
    assert f"differs from {lock}" in msg and f"delete its entry in {LOCK_NAME}" in msg
    assert hashlib.sha256(changed).hexdigest() in msg
    assert lock.read_bytes() == lock_bytes and files(cache) == []
    # the operator deletes the entry: the new jar is accepted and pinned
    lock.unlink()
    resolve([CORE], url, cache, lock)
    assert read_lock(lock)[CORE.coordinate]["sha256"] == hashlib.sha256(changed).hexdigest()


def test_unreachable_repository(cache, lock):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    start = time.monotonic()
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], f"http://127.0.0.1:{port}/maven2", cache, lock)
    msg = one_line(err)
    assert time.monotonic() - start < 10
    assert msg.startswith(f"{CORE.coordinate}: cannot reach the Maven repository http://127.0.0.1:{port}/maven2")
    assert "connection refused" in msg and "maven_repo" in msg
    assert files(cache) == [] and not lock.exists()


def test_repository_that_never_answers_times_out(cache, lock):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)  # the kernel accepts the connection, nobody ever answers
    try:
        start = time.monotonic()
        with pytest.raises(TcsessionError) as err:
            resolve([CORE], f"http://127.0.0.1:{s.getsockname()[1]}/", cache, lock, timeout=0.5)
        assert time.monotonic() - start < 5
        msg = one_line(err)
        assert msg.startswith(f"{CORE.coordinate}: ") and ("did not answer within 0.5 s" in msg or "timed out" in msg)
    finally:
        s.close()


def test_http_error_other_than_404(tmp_path, cache, lock):
    class Forbidden(SimpleHTTPRequestHandler):
        def do_GET(self):
            self.send_error(403, "Forbidden")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.raises(TcsessionError) as err:
            resolve([CORE], f"http://127.0.0.1:{httpd.server_address[1]}", cache, lock)
        assert "HTTP 403" in one_line(err)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_partial_failure_changes_nothing(repo, server, cache, lock):
    url = server.url + "/maven2"
    publish(repo, CORE)
    resolve([CORE], url, cache, lock)
    lock_bytes, cached = lock.read_bytes(), files(cache)
    publish(repo, TC9)  # fine, but new
    publish(repo, SPY, sidecar=None)  # cannot be verified
    with pytest.raises(TcsessionError) as err:
        resolve([CORE, TC9, SPY], url, cache, lock)
    assert SPY.coordinate in one_line(err)
    assert lock.read_bytes() == lock_bytes  # TC9 was not pinned
    assert files(cache) == cached  # nor cached


def test_bad_lock_file_and_repo_settings(repo, cache, lock, tmp_path):
    publish(repo, CORE)
    lock.parent.mkdir(parents=True)
    lock.write_text("[broken\n")
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], str(repo), cache, lock)
    assert str(lock) in one_line(err) and "delete it" in str(err.value)
    lock.write_text('["x:y:1"]\nsha1 = "nope"\n')
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], str(repo), cache, lock)
    assert '"x:y:1"' in one_line(err)
    lock.unlink()
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], str(tmp_path / "no-such-repo"), cache, lock)
    assert "does not exist" in one_line(err)
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], "ftp://example.org/maven2", cache, lock)
    assert "http(s)" in one_line(err)


def test_paths(tmp_path, monkeypatch):
    assert lock_path_for(tmp_path / "hosts.toml") == tmp_path / "hosts.msm.lock"
    assert lock_path_for(tmp_path / "prod.toml") == tmp_path / "prod.msm.lock"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tcsession" / "maven"


def test_an_old_msm_lock_is_read_and_migrated_without_loss(repo, cache, tmp_path):
    """Before, the lock was msm.lock in the inventory's directory; now it is <stem>.msm.lock. An
    old one is read while the new one is absent (a note says so), its pins still hold (a jar that
    differs from it is refused), and the next resolution writes every entry under the new name,
    leaving the old file as it was."""
    inventory = tmp_path / "ops" / "prod.toml"
    inventory.parent.mkdir()
    old = inventory.parent / "msm.lock"
    assert lock_to_read(inventory) == (inventory.parent / "prod.msm.lock", None)
    published = {a: publish(repo, a) for a in (CORE, TC9)}
    resolve([CORE], str(repo), cache, old)  # the old name, written as tcsession did before
    old_text = old.read_text()
    read_from, note = lock_to_read(inventory)
    assert read_from == old
    assert note == (f"{old} read: the lock file beside prod.toml is now prod.msm.lock (named after the inventory); "
                    "an msm deploy writes it there with every entry: commit prod.msm.lock, then remove msm.lock")
    new = lock_path_for(inventory)
    resolve([CORE, TC9], str(repo), cache, new, read_from=read_from)
    assert set(read_lock(new)) == {a.coordinate for a in published} and old.read_text() == old_text
    assert lock_to_read(inventory) == (new, None)
    # the old pins held while it was read: a republished jar that differs is refused, naming the old file
    new.unlink()
    publish(repo, CORE, data=b"other bytes")
    with pytest.raises(TcsessionError) as err:
        resolve([CORE], str(repo), tmp_path / "fresh-cache", new, read_from=old)
    assert f"differs from {old}" in one_line(err) and not new.exists()
