"""A TEST STAND-IN for memcached-session-manager's jars, and a Maven-layout repository serving it.

CI cannot download the real MSM jars (no Maven Central here), so the msm lab tests build a
stand-in (see standin/de/javakaffee/web/msm/MemcachedBackupSessionManager.java: a
StandardManager with MSM's class name and attributes, which never backs a session up) and
publish it under MSM's real coordinates, with `.jar.sha1` sidecars, over HTTP from the test.
It proves resolution, checksums, the lock file, placement, the jakarta conversion, Tomcat
starting with the Manager, memcached reachable from each Tomcat, rollback and the mode switch.
It proves nothing about session replication, and the tests built on it claim none.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import tempfile
import threading
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "standin" / "de" / "javakaffee" / "web" / "msm" / "MemcachedBackupSessionManager.java"
TITLE = "tcsession TEST STAND-IN, not memcached-session-manager (sessions are not backed up)"
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def _tomcat9_jars() -> list[Path]:
    root = Path(os.environ.get("TCSESSION_JASPER_DIR", Path(__file__).resolve().parent.parent
                               / ".cache/tools/root/usr/share/java"))
    jars = [root / f"tomcat9-{n}.jar" for n in ("catalina", "servlet-api", "juli", "util", "api")]
    missing = [str(j) for j in jars if not j.is_file()]
    if missing:
        raise RuntimeError(f"stand-in build needs Debian's libtomcat9-java jars (./dev.sh setup unpacks them): "
                           f"missing {', '.join(missing)}")
    return jars


def _jar(entries: dict[str, bytes]) -> bytes:
    """A jar with fixed timestamps (the same bytes on every build)."""
    manifest = (f"Manifest-Version: 1.0\r\nImplementation-Title: {TITLE}\r\n\r\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in {"META-INF/MANIFEST.MF": manifest, **entries}.items():
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def manager_class() -> bytes:
    """The stand-in Manager, compiled against Tomcat 9 (javax.servlet), for Java 11."""
    with tempfile.TemporaryDirectory() as tmp:
        cp = ":".join(str(j) for j in _tomcat9_jars())
        r = subprocess.run(["javac", "--release", "11", "-nowarn", "-cp", cp, "-d", tmp, str(SOURCE)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"javac failed on the stand-in: {r.stderr.strip()}")
        return (Path(tmp) / "de/javakaffee/web/msm/MemcachedBackupSessionManager.class").read_bytes()


def standin_jars(version: str = "2.3.2", tc: str = "tc9") -> dict[str, bytes]:
    """Maven path -> bytes, for the java-serializer jar set of one Tomcat line."""
    core = _jar({"de/javakaffee/web/msm/MemcachedBackupSessionManager.class": manager_class(),
                 "STANDIN.txt": TITLE.encode()})
    return {
        f"de/javakaffee/msm/memcached-session-manager/{version}/memcached-session-manager-{version}.jar": core,
        f"de/javakaffee/msm/memcached-session-manager-{tc}/{version}/memcached-session-manager-{tc}-{version}.jar":
            _jar({"STANDIN.txt": (TITLE + f" ({tc} module)").encode()}),
        "net/spy/spymemcached/2.12.3/spymemcached-2.12.3.jar": _jar({"STANDIN.txt": (TITLE + " (spymemcached)").encode()}),
    }


def write_repo(dest: Path, jars: dict[str, bytes]) -> Path:
    """A Maven-layout directory: each jar with its `.sha1` sidecar, as Maven Central has them."""
    for rel, data in jars.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        (path.parent / (path.name + ".sha1")).write_text(hashlib.sha1(data).hexdigest())
    return dest


@contextlib.contextmanager
def serve(directory: Path):
    """Serve a directory over HTTP on 127.0.0.1 (a random port) for the test's duration."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
