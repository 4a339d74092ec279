"""The memcached-session-manager jars one Tomcat major gets, ready to copy: resolved, verified,
converted to jakarta.* where needed, on the control machine.

Side effects on the control machine only (the Maven cache, the lock file, `javax2jakarta`);
nothing here touches a host, so every failure stops the deploy before any host is changed.

- :func:`prepare_jars`: ``jar_set`` -> :func:`tcsession.maven.resolve` (checksums, lock file)
  -> for Tomcat 10 and newer, MSM's own jars through Apache's migration tool (the converted
  bytes are cached by the input's SHA-256, so every later deploy copies the same bytes and
  changes nothing) -> a check of every class file: no ``javax/servlet`` reference goes onto a
  jakarta Tomcat, no ``jakarta/servlet`` one onto a javax Tomcat.
- :data:`MANAGED_JAR` tells a jar of MSM's family in Tomcat's lib (any version), so that older
  versions, another serializer's jars and copies left by hand are removed.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tcsession import maven, msm
from tcsession.errors import TcsessionError

# Jars of memcached-session-manager's family, by file name, whatever the version.
MANAGED_JAR = re.compile(
    r"^(memcached-session-manager(-tc\d+)?|msm-[a-z]+-serializer|spymemcached|kryo-serializers|kryo|"
    r"reflectasm|minlog|objenesis|asm|javolution)-\d[A-Za-z0-9._-]*\.jar$")
# The same, as shell `case` patterns (facts read these files from Tomcat's lib directories).
MANAGED_JAR_GLOBS = ("memcached-session-manager*", "msm-*", "spymemcached-*", "kryo-*", "reflectasm-*",
                     "minlog-*", "objenesis-*", "asm-*", "javolution-*")


@dataclass(frozen=True)
class Jar:
    """A jar for Tomcat's lib: the file name it gets there and its bytes."""

    name: str
    data: bytes
    coordinate: str
    converted: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def servlet_namespaces(data: bytes, source: str) -> set[str]:
    """Which servlet API a jar's classes refer to: {"javax"}, {"jakarta"}, both or neither."""
    found = set()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                if info.filename.endswith(".class"):
                    body = z.read(info)
                    if b"javax/servlet/" in body:
                        found.add("javax")
                    if b"jakarta/servlet/" in body:
                        found.add("jakarta")
    except (zipfile.BadZipFile, OSError) as e:
        raise TcsessionError(f"{source}: not a readable jar ({e}); delete it from the cache and the lock "
                             "file entry, then deploy again") from None
    return found


def _converter() -> str:
    tool = shutil.which("javax2jakarta")
    if tool is None:
        raise TcsessionError(
            "msm on Tomcat 10+: javax2jakarta not found on this machine; install it "
            "(apt-get install tomcat-jakartaee-migration), or set [msm] jakarta = \"supplied\" with jakarta "
            "builds of the jars in maven_repo (tcsession changed nothing)")
    return tool


def convert_into(src: Path, out: Path, what: str) -> bytes:
    """`src` converted to jakarta with Apache's migration tool into `out` (a cache entry: kept
    and returned as it is when there; written atomically otherwise)."""
    if out.is_file():
        return out.read_bytes()
    tool = _converter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        dst = Path(tmp) / out.name
        argv = msm.convert_command(src, dst)
        argv[0] = tool
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if r.returncode != 0 or not dst.is_file():
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise TcsessionError(f"javax2jakarta failed on {what} (exit {r.returncode}: {last[0]}); "
                                 "tcsession changed nothing")
        dst.replace(out)
    return out.read_bytes()


def convert(jar: Path, sha256: str, cache_dir: Path) -> bytes:
    """The jakarta conversion of ``jar``, cached by the input's SHA-256 (stable bytes)."""
    return convert_into(jar, cache_dir / "jakarta" / sha256 / msm.jakarta_jar_name(jar.name), str(jar))


def prepare_jars(settings, tomcat_major: int, lock_path: Path, cache_dir: Path | None = None,
                 inventory: str | Path = "hosts.toml", read_from: Path | None = None,
                 ) -> tuple[tuple[Jar, ...], tuple[str, ...]]:
    """The jars for a Tomcat of ``tomcat_major`` under the inventory's [msm] ``settings``, and the
    warnings the operator should see. Raises TcsessionError (one line) on anything wrong; messages
    name ``inventory``, the file the settings came from."""
    cache_dir = Path(cache_dir) if cache_dir is not None else maven.default_cache_dir()
    jakarta = msm.needs_jakarta(tomcat_major)
    if jakarta and settings.jakarta == "refuse":
        raise TcsessionError(
            f"msm on Tomcat {tomcat_major}: no memcached-session-manager release supports jakarta.*, "
            "and [msm] jakarta = \"refuse\"; set it to \"convert\" (Apache's javax2jakarta) or \"supplied\" "
            "(jakarta builds in maven_repo), or use delta mode (tcsession changed nothing)")
    js = msm.jar_set(tomcat_major, settings.serializer, settings.version)
    resolved = maven.resolve(js.artifacts, settings.maven_repo, cache_dir, lock_path, inventory=inventory,
                             read_from=read_from)
    jars = []
    for r in resolved:
        data = r.path.read_bytes()
        name, converted = r.artifact.filename, False
        if jakarta and settings.jakarta == "convert" and r.artifact in js.jakarta_convert:
            data = convert(r.path, r.sha256, cache_dir)
            name, converted = msm.jakarta_jar_name(name), True
        spaces = servlet_namespaces(data, f"{r.artifact} ({r.path})")
        wrong = "javax" if jakarta else "jakarta"
        if wrong in spaces:
            hint = ('set [msm] jakarta = "convert"' if jakarta and settings.jakarta == "supplied"
                    else "check the jar" if jakarta else "use the released (javax) jars")
            raise TcsessionError(
                f"{r.artifact}: {name} refers to {wrong}.servlet classes, which Tomcat {tomcat_major} does "
                f"not have; refusing to copy it ({hint}; tcsession changed nothing)")
        jars.append(Jar(name, data, r.artifact.coordinate, converted))
    warnings = tuple(js.warnings)
    if isinstance(settings.maven_repo, str) and settings.maven_repo.lower().startswith("http://"):
        warnings += (f"{inventory}: [msm] maven_repo {settings.maven_repo} is plain HTTP: the jars are only as safe "
                     f"as their checksums' source, and the checksums come from the same unencrypted server (then "
                     f"{lock_path} pins them); prefer https:// or a local directory",)
    return tuple(jars), warnings


def expected_digests(settings, tomcat_major: int, lock_path: Path, cache_dir: Path | None = None,
                     ) -> tuple[dict[str, str] | None, str]:
    """For `inv status`, without any network: jar file name -> the SHA-256 it must have on a
    Tomcat of ``tomcat_major``, from the lock file (and, for converted jars, this machine's
    conversion cache); or None and the reason it cannot be told."""
    cache_dir = Path(cache_dir) if cache_dir is not None else maven.default_cache_dir()
    try:
        js = msm.jar_set(tomcat_major, settings.serializer, settings.version)
        lock = maven.read_lock(lock_path)
    except TcsessionError as e:
        return None, str(e)
    out = {}
    for a in js.artifacts:
        entry = lock.get(a.coordinate)
        if entry is None:
            return None, f"{a} not in {lock_path}"
        if msm.needs_jakarta(tomcat_major) and settings.jakarta == "convert" and a in js.jakarta_convert:
            name = msm.jakarta_jar_name(a.filename)
            converted = cache_dir / "jakarta" / entry["sha256"] / name
            if not converted.is_file():
                return None, f"the jakarta conversion of {a} is not in this machine's cache ({converted})"
            out[name] = hashlib.sha256(converted.read_bytes()).hexdigest()
        else:
            out[a.filename] = entry["sha256"]
    return out, ""
