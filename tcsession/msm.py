"""memcached-session-manager (MSM) for the msm mode: which jars, which <Manager>, memcached's listen.

Pure: plain data and bytes in, plain data and bytes out. Fetching the jars is
:mod:`tcsession.maven`; copying them and writing files on the hosts is the deploy's.

What this module decides:

- :func:`jar_set`: the jars for Tomcat's lib directory, per Tomcat major and serializer.
- :func:`manager_spec`: the ``<Manager>`` attributes of one Tomcat node.
- :func:`patch_context`: a context.xml (``conf/context.xml`` for the global scope, an
  application's ``META-INF/context.xml`` for the app scope) with exactly one managed
  ``<Manager>``, preceded by a marker comment (:data:`MARKER`), every other byte kept
  (see :mod:`tcsession.xmlpatch`). :func:`render_app_context` writes a new application file.
- :func:`render_memcached_conf_debian` / :func:`render_memcached_sysconfig`: memcached's
  listen addresses and port, in Debian's ``/etc/memcached.conf`` and in the RHEL family's
  ``/etc/sysconfig/memcached``, every other line kept.
- :func:`jakarta_jar_name` / :func:`convert_command`: Tomcat 10+ (jakarta.*) has no MSM
  release; the javax jars are converted with Apache's migration tool.

Facts used (sources: magro/memcached-session-manager: README, wiki SetupAndConfiguration, the
poms of the 2.3.2 line; apache/tomcat-jakartaee-migration: MigrationCLI.java, EESpecProfiles.java;
Debian's memcached 1.6.18-1+deb12u1 package; measurements in the shared tomcat notes):

- Jars: ``de.javakaffee.msm:memcached-session-manager`` plus ``memcached-session-manager-tc7``,
  ``-tc8`` (Tomcat 8.0 and 8.5) or ``-tc9``, and ``net.spy:spymemcached``. MSM's core pom
  declares spymemcached 2.12.0; the wiki lists 2.12.3 and that is the version measured on
  Tomcat 9 and 10.1, so 2.12.3 it is.
- Kryo: ``msm-kryo-serializer``; its 2.3.2 pom pins ``de.javakaffee:kryo-serializers:0.41`` and
  ``com.esotericsoftware:kryo:4.0.0``; kryo 4.0.0 brings ``reflectasm:1.11.3``, ``minlog:1.3.0``
  and ``org.objenesis:objenesis:2.2``; reflectasm brings ``org.ow2.asm:asm:5.0.4``. All go to
  Tomcat's lib (a missing objenesis fails with NoClassDefFoundError).
- Javolution: ``msm-javolution-serializer`` was last released as 2.1.1 (the 2.3.x parent pom has
  the module commented out); it needs ``javolution:javolution:5.4.3.1``, a custom build MSM
  published in its own Google Code repository, which no longer exists, and which is not on
  Maven Central. :func:`jar_set` returns that set with warnings: it resolves only from a
  repository (e.g. a local directory) where the operator supplies that jar.
- Sticky sessions: ``failoverNodes`` names the memcached on the Tomcat's own host (so it
  differs per node), and only when there are two or more memcached nodes (MSM needs at least
  one node that is not a failover node). Non-sticky: no failoverNodes (the wiki: must not be
  set), and a ``lockingMode``: ``all`` by default. Measured with the real 2.3.2 jars, 10 clients at
  once on one session: ``auto`` and ``all`` alone both repeated 1 to 3 counts in 200 (the URI
  cache of ``auto`` is not the cause). Two MSM causes: a request that waits longer than
  operationTimeout for the lock goes on without it (``LockingStrategy.lock``, WARNING "Reached
  timeout"), and concurrent requests of one session on the SAME Tomcat get past the lock (its
  ``findSession`` hands out the in-memory session without a reference when the lookup counts as
  the container's, and ``backupSession`` then finds it gone and stores nothing). The deploy
  therefore also puts Tomcat's PersistentValve in the Host (:func:`tcsession.serverxml.patch_session_valve`).
- ``backup``: ``sync`` sets ``sessionBackupAsync="false"`` (MSM stores the session inside the
  request, before the response is sent) and ``sessionBackupTimeout`` 1000 ms (MSM's default, 100
  ms, makes a slow store count as a failed node); ``async`` keeps MSM's defaults.
- Tomcat 10 and 11: the tc9 jars (and the core jar, which uses javax.servlet) converted with
  ``javax2jakarta -profile=TOMCAT in.jar out.jar`` (Debian package tomcat-jakartaee-migration;
  the option is ``-profile=`` with the enum name, upper case, as the first argument).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Sequence
from urllib.parse import quote, unquote

from lxml import etree

from tcsession.errors import TcsessionError
from tcsession.xmlpatch import (
    is_marker,
    marker_before,
    XmlDocument,
    element_children,
    indent_of,
    insert_after,
    insert_before,
    remove_node,
)

__all__ = [
    "Artifact",
    "JarSet",
    "ManagerSpec",
    "MARKER",
    "MANAGER_CLASS",
    "SUPPORTED_MAJORS",
    "SERIALIZERS",
    "TRANSCODER_FACTORIES",
    "convert_command",
    "jakarta_jar_name",
    "jar_set",
    "manager_spec",
    "needs_jakarta",
    "patch_context",
    "read_manager",
    "render_app_context",
    "render_manager",
    "render_memcached_conf_debian",
    "render_memcached_sysconfig",
]

SUPPORTED_MAJORS = (7, 8, 9, 10, 11)
SERIALIZERS = ("java", "kryo", "javolution")
CHECKED_VERSION = "2.3.2"  # the MSM release whose poms the jar lists below were checked against
MSM_GROUP = "de.javakaffee.msm"
MANAGER_CLASS = "de.javakaffee.web.msm.MemcachedBackupSessionManager"
TRANSCODER_FACTORIES = {
    "java": None,  # MSM's default: Java serialization, in the core jar
    "kryo": "de.javakaffee.web.msm.serializer.kryo.KryoTranscoderFactory",
    "javolution": "de.javakaffee.web.msm.serializer.javolution.JavolutionTranscoderFactory",
}
MARKER = "tcsession: managed session manager (tcsession deploy, mode msm); edits here are replaced"
_MARKER_HEAD = MARKER.split(" (")[0]
_SELF_CLOSING = re.compile(r'; Context was self-closing: "([^"]*)"')
_NODE_ID = re.compile(r"^[A-Za-z0-9_]+$")
_COORD_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_LOCKING = re.compile(r"^(none|all|auto|uriPattern:.+)$", re.S)
BACKUPS = ("sync", "async")
SYNC_BACKUP_TIMEOUT_MS = "1000"  # MSM's operationTimeout default: what one memcached operation may take
TOMCAT_INDENT = "    "  # Tomcat's own context.xml files indent by four spaces


# --------------------------------------------------------------------------- jars


@dataclass(frozen=True)
class Artifact:
    """A jar in a Maven repository: ``group:artifact:version``."""

    group: str
    artifact: str
    version: str

    def __post_init__(self) -> None:
        for part in (self.group, self.artifact, self.version):
            if not isinstance(part, str) or not _COORD_PART.match(part) or ".." in part:
                raise ValueError(f"not a Maven coordinate part: {part!r}")

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    @property
    def path(self) -> str:
        """Maven layout path of the jar, relative to the repository root."""
        return "/".join([*self.group.split("."), self.artifact, self.version, self.filename])

    @property
    def coordinate(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    def __str__(self) -> str:
        return self.coordinate


@dataclass(frozen=True)
class JarSet:
    """The jars for Tomcat's lib directory, and what the operator should know about them.

    ``jakarta_convert``: the subset to run through :func:`convert_command` (Tomcat 10+:
    MSM's own jars, which reference javax.servlet); empty for Tomcat 7 to 9.
    """

    artifacts: tuple[Artifact, ...]
    warnings: tuple[str, ...] = ()
    jakarta_convert: tuple[Artifact, ...] = ()


SPYMEMCACHED = Artifact("net.spy", "spymemcached", "2.12.3")
# msm-kryo-serializer 2.3.2's pom: kryo-serializers 0.41, kryo 4.0.0; kryo 4.0.0's own
# dependencies: reflectasm 1.11.3 (which needs asm 5.0.4), minlog 1.3.0, objenesis 2.2.
KRYO_DEPENDENCIES = (
    Artifact("de.javakaffee", "kryo-serializers", "0.41"),
    Artifact("com.esotericsoftware", "kryo", "4.0.0"),
    Artifact("com.esotericsoftware", "reflectasm", "1.11.3"),
    Artifact("com.esotericsoftware", "minlog", "1.3.0"),
    Artifact("org.objenesis", "objenesis", "2.2"),
    Artifact("org.ow2.asm", "asm", "5.0.4"),
)
JAVOLUTION_SERIALIZER_VERSION = "2.1.1"
JAVOLUTION = Artifact("javolution", "javolution", "5.4.3.1")


def needs_jakarta(tomcat_major: int) -> bool:
    """Tomcat 10 and newer use jakarta.* (no MSM release does): the jars must be converted."""
    return tomcat_major >= 10


def _tomcat_module(tomcat_major: int) -> str:
    if isinstance(tomcat_major, bool) or not isinstance(tomcat_major, int):
        raise TcsessionError(
            f"memcached-session-manager: Tomcat major version {tomcat_major!r} is not a number; "
            f"this is a tcsession bug, please report it")
    if tomcat_major == 6:
        raise TcsessionError(
            "memcached-session-manager: Tomcat 6 is not supported by tcsession (it deploys MSM on "
            "Tomcat 7 to 11); upgrade Tomcat or configure MSM's tc6 jar by hand")
    if tomcat_major not in SUPPORTED_MAJORS:
        raise TcsessionError(
            f"memcached-session-manager: Tomcat {tomcat_major} is not supported; tcsession knows "
            f"the MSM jars for Tomcat 7, 8 (8.0/8.5), 9, 10 and 11")
    return {7: "tc7", 8: "tc8"}.get(tomcat_major, "tc9")


def jar_set(tomcat_major: int, serializer: str, version: str = CHECKED_VERSION) -> JarSet:
    """The jars memcached-session-manager ``version`` needs in Tomcat's lib, in install order.

    Tomcat 10/11 get the tc9 jar; :attr:`JarSet.jakarta_convert` lists what to convert.
    Raises :class:`TcsessionError` for Tomcat 6, unknown majors and unknown serializers.
    """
    module = _tomcat_module(tomcat_major)
    if serializer not in SERIALIZERS:
        listed = ", ".join(f'"{s}"' for s in SERIALIZERS)
        raise TcsessionError(
            f'the inventory\'s [msm] serializer "{serializer}" is not one of {listed}; use one of them')
    if not isinstance(version, str) or not re.fullmatch(r"\d+(\.\d+)*(-[A-Za-z0-9]+)*", version):
        raise TcsessionError(
            f'the inventory\'s [msm] version {version!r} is not a version; write e.g. version = "2.3.2"')
    core = Artifact(MSM_GROUP, "memcached-session-manager", version)
    tc = Artifact(MSM_GROUP, f"memcached-session-manager-{module}", version)
    artifacts = [core, tc, SPYMEMCACHED]
    warnings: list[str] = []
    if serializer == "kryo":
        artifacts.append(Artifact(MSM_GROUP, "msm-kryo-serializer", version))
        artifacts.extend(KRYO_DEPENDENCIES)
        if version != CHECKED_VERSION:
            warnings.append(
                f"msm serializer kryo: the kryo jar versions are those of MSM {CHECKED_VERSION}'s "
                f"pom; check msm-kryo-serializer {version}'s pom for the versions it needs")
    elif serializer == "javolution":
        artifacts.append(Artifact(MSM_GROUP, "msm-javolution-serializer", JAVOLUTION_SERIALIZER_VERSION))
        artifacts.append(JAVOLUTION)
        warnings.append(
            f"msm serializer javolution: msm-javolution-serializer was last released as "
            f"{JAVOLUTION_SERIALIZER_VERSION} and is combined here with MSM {version}, a pairing "
            f'MSM never released or tested; prefer serializer = "kryo" or "java" in the inventory\'s [msm]')
        warnings.append(
            f"msm serializer javolution: it needs {JAVOLUTION.coordinate}, a custom build that was "
            f"only in MSM's own (now gone) repository and is not on Maven Central; put the jar and "
            f"its .sha1 in a local Maven-layout directory and set [msm] maven_repo to it")
    convert: tuple[Artifact, ...] = ()
    if needs_jakarta(tomcat_major):
        convert = tuple(a for a in artifacts if a.group == MSM_GROUP)
    return JarSet(tuple(artifacts), tuple(warnings), convert)


def jakarta_jar_name(filename: str) -> str:
    """``x-2.3.2.jar`` -> ``x-2.3.2-jakarta.jar`` (the converted copy; unchanged if already one)."""
    if not isinstance(filename, str) or not filename.endswith(".jar") or "/" in filename or len(filename) <= 4:
        raise ValueError(f"not a jar file name: {filename!r}")
    stem = filename[: -len(".jar")]
    if stem.endswith("-jakarta"):
        return filename
    return f"{stem}-jakarta.jar"


def convert_command(src: str | PurePath, dst: str | PurePath) -> list[str]:
    """argv converting a javax jar into a jakarta one (Debian: package tomcat-jakartaee-migration).

    ``-profile=TOMCAT`` (the default profile, spelled out) converts only the packages Tomcat
    implements (servlet, el, websocket, security.auth.message, ...), nothing of the JDK.
    """
    return ["javax2jakarta", "-profile=TOMCAT", str(src), str(dst)]


# --------------------------------------------------------------------------- the Manager


@dataclass(frozen=True)
class ManagerSpec:
    """One Tomcat node's MemcachedBackupSessionManager."""

    memcached_nodes: tuple[tuple[str, str, int], ...]  # (id, host, port)
    failover_nodes: tuple[str, ...]
    sticky: bool
    locking_mode: str | None  # None in sticky mode (MSM ignores it there)
    request_uri_ignore_pattern: str | None
    transcoder_factory_class: str | None  # None: Java serialization (MSM's default)
    backup: str = "async"  # "sync": sessionBackupAsync="false" (stored before the response)

    @property
    def memcached_nodes_value(self) -> str:
        return ",".join(f"{i}:{h}:{p}" for i, h, p in self.memcached_nodes)

    def attributes(self) -> list[tuple[str, str]]:
        """The Manager's attributes in the order tcsession writes them."""
        attrs = [("className", MANAGER_CLASS), ("memcachedNodes", self.memcached_nodes_value)]
        if self.failover_nodes:
            attrs.append(("failoverNodes", " ".join(self.failover_nodes)))
        attrs.append(("sticky", "true" if self.sticky else "false"))
        if not self.sticky and self.locking_mode:
            attrs.append(("lockingMode", self.locking_mode))
        if self.request_uri_ignore_pattern:
            attrs.append(("requestUriIgnorePattern", self.request_uri_ignore_pattern))
        if self.transcoder_factory_class:
            attrs.append(("transcoderFactoryClass", self.transcoder_factory_class))
        if self.backup == "sync":
            # the backup inside the request: BackupSessionTask waits for memcached's answer up to
            # sessionBackupTimeout (MSM's default 100 ms; on a timeout MSM logs "Could not store
            # session" and marks the node unavailable), so give it MSM's operationTimeout
            attrs += [("sessionBackupAsync", "false"), ("sessionBackupTimeout", SYNC_BACKUP_TIMEOUT_MS)]
        return attrs


def _node_fields(node: Any, index: int) -> tuple[str, str, bool]:
    """(name, address, has memcached) of an inventory Host or an (address, memcached) pair."""
    if isinstance(node, tuple):
        address, memcached = node
        return f"tomcat #{index + 1}", address, bool(memcached)
    name = getattr(node, "name", f"tomcat #{index + 1}")
    return name, node.address, bool(getattr(node, "memcached", True))


def _check_memcached_host(name: str, address: str, source: str = "hosts.toml") -> None:
    where = f"{source}: [tomcat.{name}] address"
    if not isinstance(address, str) or not address or any(c in address for c in " ,:\t\n"):
        if isinstance(address, str) and ":" in address:
            raise TcsessionError(
                f'{where} "{address}": memcached-session-manager writes memcached nodes as id:host:port, '
                f"which cannot hold an IPv6 address; use the host's IPv4 address or a DNS name")
        raise TcsessionError(f"{where} {address!r} cannot be used as a memcached host; give its IP address")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if (ip is not None and (ip.is_loopback or ip.is_unspecified)) or address.lower() == "localhost":
        raise TcsessionError(
            f'{where} "{address}" is a loopback/unspecified address: the other Tomcats could not reach '
            f"this memcached; give the host's own network address")


def manager_spec(node_index: int, nodes: Sequence[Any], msm_settings: Any, source: str = "hosts.toml") -> ManagerSpec:
    """The Manager of Tomcat ``nodes[node_index]``.

    ``nodes``: every Tomcat, in inventory order (``Inventory.tomcats``; or ``(address, memcached)``
    pairs). Each Tomcat with memcached is node ``n<position>`` (tomcat1 -> n1, tomcat2 -> n2),
    so ids stay put when one host has no memcached. ``msm_settings``: ``Inventory.msm``;
    ``source``: the inventory file they came from (messages name it).
    """
    if not nodes:
        raise TcsessionError(f"{source}: msm needs at least one [tomcat.<name>] table; add the Tomcat hosts")
    if not isinstance(node_index, int) or not 0 <= node_index < len(nodes):
        raise TcsessionError(f"msm: node index {node_index!r} is outside the {len(nodes)} Tomcats; "
                             f"this is a tcsession bug, please report it")
    port = int(msm_settings.memcached_port)
    fields = [_node_fields(n, i) for i, n in enumerate(nodes)]
    memcached_nodes = []
    for i, (name, address, has_memcached) in enumerate(fields):
        if has_memcached:
            _check_memcached_host(name, address, source)
            memcached_nodes.append((f"n{i + 1}", address, port))
    if not memcached_nodes:
        raise TcsessionError(
            f"{source}: msm mode needs memcached on at least one Tomcat host; set memcached = true in "
            "the [tomcat.<name>] tables (best on every one)")
    hosts = [h for _, h, _ in memcached_nodes]
    if len(set(hosts)) != len(hosts):
        dup = next(h for h in hosts if hosts.count(h) > 1)
        raise TcsessionError(f'{source}: two Tomcat hosts share the address "{dup}"; give each its own address')

    sticky = bool(msm_settings.sticky)
    own_id = f"n{node_index + 1}"
    failover: tuple[str, ...] = ()
    if sticky and len(memcached_nodes) >= 2 and fields[node_index][2]:
        failover = (own_id,)
    locking = None
    if not sticky:
        locking = msm_settings.locking_mode or "all"
        if not _LOCKING.match(locking):
            raise TcsessionError(
                f'{source}: [msm] locking_mode "{locking}" is invalid; use "none", "all", "auto" '
                f'or "uriPattern:<regex>"')
    serializer = msm_settings.serializer
    if serializer not in TRANSCODER_FACTORIES:
        listed = ", ".join(f'"{s}"' for s in SERIALIZERS)
        raise TcsessionError(f'{source}: [msm] serializer "{serializer}" is not one of {listed}; use one of them')
    return ManagerSpec(
        memcached_nodes=tuple(memcached_nodes),
        failover_nodes=failover,
        sticky=sticky,
        locking_mode=locking,
        request_uri_ignore_pattern=msm_settings.request_uri_ignore_pattern or None,
        transcoder_factory_class=TRANSCODER_FACTORIES[serializer],
        backup=_backup(getattr(msm_settings, "backup", "sync"), source),
    )


def _backup(value: Any, source: str = "hosts.toml") -> str:
    if value not in BACKUPS:
        raise TcsessionError(f'{source}: [msm] backup = {value!r} is invalid; use "sync" (the session stored in '
                             f'memcached before the response) or "async" (after it, MSM\'s default)')
    return value


def _validate_spec(spec: ManagerSpec, source: str) -> None:
    if not spec.memcached_nodes:
        raise TcsessionError(f"{source}: the Manager needs at least one memcached node; give memcachedNodes")
    ids = []
    for node in spec.memcached_nodes:
        if not (isinstance(node, tuple) and len(node) == 3):
            raise TcsessionError(f"{source}: memcached node {node!r} must be (id, host, port)")
        node_id, host, port = node
        if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
            raise TcsessionError(f"{source}: memcached node id {node_id!r} must be letters, digits or _ (e.g. n1)")
        if not isinstance(host, str) or not host or any(c in host for c in " ,:\t\n"):
            raise TcsessionError(f"{source}: memcached host {host!r} must be an IPv4 address or DNS name")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise TcsessionError(f"{source}: memcached port {port!r} must be an integer from 1 to 65535")
        ids.append(node_id)
    if len(set(ids)) != len(ids):
        raise TcsessionError(f"{source}: memcached node ids {', '.join(ids)} are not unique; number them n1, n2, ...")
    if spec.failover_nodes:
        if not spec.sticky:
            raise TcsessionError(
                f"{source}: failoverNodes is only for sticky sessions (MSM's wiki: must not be set "
                f"when non-sticky); remove them or use sticky mode")
        unknown = [f for f in spec.failover_nodes if f not in ids]
        if unknown:
            raise TcsessionError(f"{source}: failover node {unknown[0]} is not among the memcached nodes {', '.join(ids)}")
        if len(set(spec.failover_nodes)) >= len(ids):
            raise TcsessionError(
                f"{source}: every memcached node is a failover node; MSM needs at least one regular node")
    if spec.backup not in BACKUPS:
        raise TcsessionError(f'{source}: backup "{spec.backup}" is invalid; use sync or async')
    if not spec.sticky and spec.locking_mode is not None and not _LOCKING.match(spec.locking_mode):
        raise TcsessionError(f'{source}: lockingMode "{spec.locking_mode}" is invalid; use none, all, auto or uriPattern:<regex>')


def _attr_text(value: str) -> str:
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;"))


def render_manager(spec: ManagerSpec, indent: str = TOMCAT_INDENT) -> str:
    """The ``<Manager .../>`` element: one attribute per line, aligned under the first.

    The first line is not indented (it goes where the caller puts it); the others are, for
    a Manager that starts at column ``len(indent)``.
    """
    pad = "\n" + indent + " " * len("<Manager ")
    return "<Manager " + pad.join(f'{n}="{_attr_text(v)}"' for n, v in spec.attributes()) + "/>"


# --------------------------------------------------------------------------- context.xml


def _is_marker(node) -> bool:
    return is_marker(node, _MARKER_HEAD)


def _marker_before(node):
    return marker_before(node, _MARKER_HEAD)


def _marker_text(self_closing_gap: str | None) -> str:
    text = MARKER
    if self_closing_gap is not None:
        # the Context was <Context .../> before tcsession: remember the blanks before "/>"
        text += f'; Context was self-closing: "{quote(self_closing_gap, safe="")}"'
    return f" {text} "


def _self_closing_note(marker) -> str | None:
    m = _SELF_CLOSING.search(marker.text or "")
    return unquote(m.group(1)) if m else None


def _self_closing_gap(doc: XmlDocument) -> str | None:
    """The blanks before ``/>`` when the root is written ``<Context .../>``, else None."""
    raw = doc.data[len(doc.prefix): len(doc.data) - len(doc.suffix)]
    if not raw.endswith(b"/>"):
        return None
    inner = raw[:-2]
    return inner[len(inner.rstrip()):].decode(doc.encoding)


def _append_only_child(root, new, inner: str) -> None:
    """Make ``new`` the first and only child of ``root``, on its own line at ``inner``."""
    text = root.text or ""
    root.append(new)
    if "\n" in text:
        stripped = text.rstrip(" \t\r\n")
        run = text[len(stripped):]
        nl = run.rfind("\n")
        kept = stripped + run[:nl]
        root.text = kept + "\n" + inner
        new.tail = text[len(kept):]
    else:
        root.text = text + "\n" + inner
        new.tail = "\n" + indent_of(root)


def _serialize(doc: XmlDocument, self_closing_gap: str | None) -> bytes:
    root = doc.root
    if self_closing_gap is None or len(root) or (root.text or "").strip():
        return doc.to_bytes()
    root.text = None
    body = doc.serialize_root()
    etag = f"</{root.tag}>".encode(doc.encoding)
    if body.endswith(b">" + etag):
        body = body[: -len(etag) - 1] + self_closing_gap.encode(doc.encoding) + b"/>"
    return doc.prefix + body + doc.suffix


def patch_context(data: bytes, spec: ManagerSpec | None, source: str) -> bytes:
    """context.xml with the managed MSM ``<Manager>`` for ``spec`` (or without it, for None).

    Works on ``conf/context.xml`` (global scope) and on an application's
    ``META-INF/context.xml`` (app scope), including a self-closing ``<Context .../>``; for an
    application without that file use :func:`render_app_context` (and, for None, delete the
    file the deploy created rather than patching it).

    - Exactly one ``<Manager>`` directly in the root ``<Context>``, with :data:`MARKER` in a
      comment right before it. A managed Manager is replaced where it stands; a new one goes
      after the Context's last child (in Tomcat's stock files: right after the commented-out
      ``<Manager>`` example).
    - An operator's own ``<Manager>`` (no marker) is **replaced** in place, because a Context
      has one Manager; the deploy saves the file first, and rollback restores it from that copy.
      ``spec=None`` leaves an unmarked Manager alone.
    - ``spec=None`` removes the managed Manager and its marker. Stock file -> spec -> None gives
      the stock file back byte for byte (a self-closing Context too: the marker remembers it).
    - Idempotent; every byte outside the managed lines is kept. Malformed XML, a root other
      than ``<Context>`` or several ``<Manager>`` elements raise :class:`TcsessionError`
      (one line naming ``source``), and nothing is changed.
    """
    if spec is not None:
        _validate_spec(spec, source)
    doc = XmlDocument(data, source)
    root = doc.root
    if root.tag != "Context":
        raise TcsessionError(
            f"{source}: the root element is <{root.tag}>, expected <Context>; is this a Tomcat "
            f"context.xml? (tcsession changed nothing)")
    managers = element_children(root, "Manager")
    if len(managers) > 1:
        raise TcsessionError(
            f"{source}: the <Context> holds {len(managers)} <Manager> elements; Tomcat uses one: "
            f"remove the extra ones (tcsession changed nothing)")
    existing = managers[0] if managers else None
    markers = [n for n in root if _is_marker(n)]
    own_marker = _marker_before(existing) if existing is not None else None
    stray = [m for m in markers if m is not own_marker]
    gap = None
    for m in ([own_marker] if own_marker is not None else []) + stray:
        gap = _self_closing_note(m)
        if gap is not None:
            break

    if spec is None:
        if not markers:
            return data  # nothing of ours here
        for marker in stray:
            remove_node(marker)
        if own_marker is not None:
            remove_node(existing)
            remove_node(own_marker)
        return _serialize(doc, gap)

    if existing is None and not markers and len(root) == 0:
        gap = _self_closing_gap(doc)
    for marker in stray:
        remove_node(marker)
    marker_text = _marker_text(gap)
    if existing is not None:
        manager = doc.fragment(render_manager(spec, indent_of(existing)))
        manager.tail = existing.tail
        root.replace(existing, manager)
        if own_marker is not None:
            if own_marker.text != marker_text:
                own_marker.text = marker_text
        else:
            insert_before(manager, etree.Comment(marker_text))
        return doc.to_bytes()
    children = list(root)
    if children:
        manager = doc.fragment(render_manager(spec, indent_of(children[-1])))
        insert_after(children[-1], manager)
    else:
        inner = indent_of(root) + TOMCAT_INDENT
        manager = doc.fragment(render_manager(spec, inner))
        _append_only_child(root, manager, inner)
    insert_before(manager, etree.Comment(marker_text))
    return doc.to_bytes()


def read_manager(data: bytes, source: str) -> dict | None:
    """The MSM Manager of a context.xml for a status view: its attributes plus ``managed``
    (tcsession's marker is there), or None when the Context has no MSM Manager."""
    doc = XmlDocument(data, source)
    for manager in element_children(doc.root, "Manager"):
        if manager.get("className") == MANAGER_CLASS:
            return {**manager.attrib, "managed": _marker_before(manager) is not None}
    return None


NEW_APP_CONTEXT = b'<?xml version="1.0" encoding="UTF-8"?>\n<Context>\n</Context>\n'


def render_app_context(spec: ManagerSpec) -> bytes:
    """A new ``META-INF/context.xml`` for an application that has none: just our Manager."""
    return patch_context(NEW_APP_CONTEXT, spec, "META-INF/context.xml (new file)")


# --------------------------------------------------------------------------- memcached


_HOST_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"^{_HOST_LABEL}(\.{_HOST_LABEL})*$")


def _check_listen(listen: Any, port: Any, source: str) -> tuple[str, ...]:
    if isinstance(listen, str) or not isinstance(listen, (tuple, list)):
        raise TcsessionError(
            f"{source}: memcached listen addresses must be a tuple of addresses, not {listen!r}; "
            f"this is a tcsession bug, please report it")
    if not listen:
        raise TcsessionError(
            f"{source}: no listen address for memcached: without -l it listens on every address "
            f"(an open cache); give the host's private address")
    seen: list[str] = []
    for address in listen:
        ok = isinstance(address, str) and bool(address)
        if ok:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                ok = bool(_HOSTNAME.match(address)) and not address.split(".")[-1].isdigit()
        if not ok:
            raise TcsessionError(
                f"{source}: memcached listen address {address!r} is neither an IP address nor a host "
                f"name; give the host's private address")
        if address not in seen:
            seen.append(address)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise TcsessionError(f"{source}: memcached port {port!r} is not a port; use an integer from 1 to 65535")
    return tuple(seen)


def _lines(existing: bytes) -> list[str]:
    # latin-1 maps every byte to one character: decoding and encoding back is the identity
    return existing.decode("latin-1").splitlines(keepends=True)


def _eol(lines: list[str]) -> str:
    for line in lines:
        if line.endswith("\r\n"):
            return "\r\n"
        if line.endswith("\n"):
            return "\n"
    return "\n"


def _split_eol(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body):]


_CONF_LISTEN = re.compile(r"^(\s*)(?:-l\s*|--listen(?:\s*=\s*|\s+))([^\s#]+)(.*)$")
_CONF_PORT = re.compile(r"^(\s*)(?:-p\s*|--port(?:\s*=\s*|\s+))([^\s#]+)(.*)$")


def _option_tokens(body: str) -> list[str]:
    # systemd-memcached-wrapper drops everything from an unescaped "#" on
    return re.sub(r"(?<!\\)#.*", "", body).split()


def _is_listen_token(tok: str) -> bool:
    return tok == "-l" or (tok.startswith("-l") and not tok.startswith("--")) or tok == "--listen" or tok.startswith("--listen=")


def _is_port_token(tok: str) -> bool:
    return tok == "-p" or (tok.startswith("-p") and not tok.startswith("--")) or tok == "--port" or tok.startswith("--port=")


# Where memcached's listen options live, by package manager.
MEMCACHED_CONF = {"apt-get": "/etc/memcached.conf", "dnf": "/etc/sysconfig/memcached",
                  "yum": "/etc/sysconfig/memcached"}


def memcached_conf_path(package_manager: str | None) -> str:
    return MEMCACHED_CONF.get(package_manager or "", "/etc/memcached.conf")


def render_memcached_conf(package_manager: str | None, existing: bytes, host_name: str, address: str,
                          port: int, localhost: bool = False) -> bytes:
    """The host's memcached configuration listening on its own address (and 127.0.0.1 if asked)."""
    path = memcached_conf_path(package_manager)
    source = f"{host_name}:{path}"
    listen = (address, "127.0.0.1") if localhost else (address,)
    if path == "/etc/memcached.conf":
        return render_memcached_conf_debian(existing, listen, port, source)
    return render_memcached_sysconfig(existing, listen, port, source)


def render_memcached_conf_debian(existing: bytes, listen: tuple[str, ...], port: int,
                                 source: str = "/etc/memcached.conf") -> bytes:
    """Debian's /etc/memcached.conf listening on ``listen`` (one ``-l a,b`` line) and ``port``.

    The first active ``-l`` line and the first ``-p`` line are rewritten in place (a trailing
    comment on them is kept); later active ``-l``/``-p`` lines are removed (memcached would add
    the extra listen addresses); a missing one is appended. Every other line, comments and
    commented-out options included, is kept byte for byte. Idempotent. ``listen`` must not be
    empty: without ``-l`` memcached listens on every address.
    """
    addresses = _check_listen(listen, port, source)
    value = ",".join(addresses)
    lines = _lines(existing)
    eol = _eol(lines)
    out: list[str] = []
    done_listen = done_port = False
    for number, line in enumerate(lines, 1):
        body, end = _split_eol(line)
        tokens = _option_tokens(body)
        if not tokens:
            out.append(line)
            continue
        if any(_is_listen_token(t) or _is_port_token(t) for t in tokens[1:]):
            raise TcsessionError(
                f"{source}: line {number} sets -l or -p after another option; put each option on its "
                f"own line so tcsession can set memcached's listen address and port (nothing changed)")
        first = tokens[0]
        if _is_listen_token(first):
            m = _CONF_LISTEN.match(body)
            if m is None:
                raise TcsessionError(f"{source}: line {number} has -l without an address; fix or remove it (nothing changed)")
            if not done_listen:
                out.append(f"{m.group(1)}-l {value}{m.group(3)}{end or eol}")
                done_listen = True
            continue
        if _is_port_token(first):
            m = _CONF_PORT.match(body)
            if m is None:
                raise TcsessionError(f"{source}: line {number} has -p without a port; fix or remove it (nothing changed)")
            if not done_port:
                out.append(f"{m.group(1)}-p {port}{m.group(3)}{end or eol}")
                done_port = True
            continue
        out.append(line)
    if (not done_listen or not done_port) and out and not out[-1].endswith(("\n", "\r")):
        out[-1] += eol
    if not done_port:
        out.append(f"-p {port}{eol}")
    if not done_listen:
        out.append(f"-l {value}{eol}")
    return "".join(out).encode("latin-1")


_SYSCONFIG_LINE = re.compile(r"^(\s*(?:export\s+)?)([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_OPT_LISTEN = re.compile(r"(^|\s+)(-l\s*|--listen(?:=|\s+))([^\s\"']+)")
_OPT_PORT = re.compile(r"(^|\s+)(-p\s*|--port(?:=|\s+))([^\s\"']+)")


def _shell_value(raw: str) -> tuple[str, str, str]:
    """(open quote, value, close quote + rest) of a sysconfig assignment's right-hand side."""
    if raw[:1] in ('"', "'"):
        q = raw[0]
        end = raw.find(q, 1)
        if end < 0:
            raise ValueError("unterminated quote")
        return q, raw[1:end], raw[end:]
    m = re.match(r"[^\s#]*", raw)
    value = m.group(0)
    return "", value, raw[len(value):]


def render_memcached_sysconfig(existing: bytes, listen: tuple[str, ...], port: int,
                               source: str = "/etc/sysconfig/memcached") -> bytes:
    """The RHEL family's /etc/sysconfig/memcached with ``PORT`` and OPTIONS' ``-l`` set.

    ``PORT="..."`` gets ``port``; inside ``OPTIONS`` the first ``-l``/``--listen`` gets
    ``a,b`` (the others are removed), a ``-p`` there gets ``port`` too (it would override PORT),
    and other options are kept as written. Missing PORT/OPTIONS lines are appended, a missing
    ``-l`` is put first in OPTIONS. Other lines are kept byte for byte. Idempotent.
    """
    addresses = _check_listen(listen, port, source)
    value = ",".join(addresses)
    lines = _lines(existing)
    eol = _eol(lines)
    out: list[str] = []
    seen_port = seen_options = False
    for number, line in enumerate(lines, 1):
        body, end = _split_eol(line)
        m = _SYSCONFIG_LINE.match(body)
        if m is None or m.group(2) not in ("PORT", "OPTIONS"):
            out.append(line)
            continue
        lead, key, raw = m.groups()
        try:
            q, val, rest = _shell_value(raw)
        except ValueError:
            raise TcsessionError(f"{source}: line {number}: {key} has an unterminated quote; fix the line (nothing changed)") from None
        if key == "PORT":
            if seen_port:
                continue  # the shell would take the last one: keep one
            seen_port = True
            new_val = str(port)
        else:
            if seen_options:
                continue
            seen_options = True
            new_val = _set_options(val, value, port)
            if not q and " " in new_val:
                q, rest = '"', '"' + rest
        out.append(f"{lead}{key}={q}{new_val}{rest}{end}")
    if (not seen_port or not seen_options) and out and not out[-1].endswith(("\n", "\r")):
        out[-1] += eol
    if not seen_port:
        out.append(f'PORT="{port}"{eol}')
    if not seen_options:
        out.append(f'OPTIONS="-l {value}"{eol}')
    return "".join(out).encode("latin-1")


def _set_options(options: str, listen_value: str, port: int) -> str:
    found = False

    def listen(m: re.Match) -> str:
        nonlocal found
        if found:
            return ""
        found = True
        return f"{m.group(1)}-l {listen_value}"

    result = _OPT_LISTEN.sub(listen, options)
    result = _OPT_PORT.sub(lambda m: f"{m.group(1)}-p {port}", result)
    if not found:
        result = f"-l {listen_value}" + (" " + result.lstrip() if result.strip() else "")
    return result
