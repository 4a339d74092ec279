"""Facts: what is on a host, read in one round trip and parsed by pure code.

Each fact set is a command and its parser side by side: `deploy_script()` / `status_script()`
(built by tcsession.shell) print `@@section` headers followed by raw command output, and
`parse_facts` turns that text into a `HostFacts` value. Nothing here decides anything: the plan
reads facts, the status view shows them.
"""

from __future__ import annotations

import base64
import dataclasses
import re

from tcsession import firewall, msm, nginx, shell, state, unattended
from tcsession.packages import PATTERN as PACKAGE_PATTERN
from tcsession.packages import HostPackages, parse_packages
from tcsession.errors import TcsessionError, UnreachableError
from tcsession.msmjars import MANAGED_JAR_GLOBS
from tcsession.probes import Listener, parse_memcached_probe, parse_os_release, parse_ss
from tcsession.tomcat import Layout, all_layouts, installed_tomcat


# --------------------------------------------------------------------------- what is asked


def files_to_read() -> list[str]:
    """Every file a Tomcat or nginx host might have that planning and status read, whatever
    the layout."""
    paths = []
    for lay in all_layouts():
        paths += [lay.server_xml, lay.jvm_options, lay.web_xml, lay.test_page, lay.context_xml, lay.app_context]
    paths += [nginx.SITE, nginx.DEFAULT_SITE, nginx.TLS_CERT, nginx.TLS_KEY, *nginx.MAIN_CONF.values(),
              state.applied_path("nginx")]
    paths += [state.applied_path(lay.unit) for lay in all_layouts()]
    paths += [*msm.MEMCACHED_CONF.values(), state.applied_path("memcached"), state.JARS_LIST]
    paths += [firewall.RULES, firewall.UNIT_FILE]
    paths += [unattended.APT_HOLD, unattended.NEEDRESTART_CONF]
    return sorted(set(paths), key=paths.index)


def app_files(apps=()) -> list[str]:
    """The inventory's applications' files (WAR, context descriptor), whatever the layout."""
    from tcsession.apps import context_path, war_path

    return [p for lay in all_layouts() for a in apps for p in (war_path(lay, a), context_path(lay, a))]


END = "@@end"  # the last line of every facts answer: one without it was cut short


def end_marked(script: str) -> str:
    return script + f"echo {END}\n"


def complete(stdout: str) -> bool:
    """Did the answer reach its end marker (a dropped connection or a login script that exits
    leaves a shorter answer, which must never be read as facts: missing files would be planned)?"""
    lines = stdout.rstrip("\n").rsplit("\n", 1)
    return lines[-1] == END


def incomplete(host: str) -> str:
    return (f"{host}: incomplete answer to tcsession's facts (it did not reach its end marker: the connection "
            "dropped, or a login script printed or exited); nothing was read from it and nothing changed; run "
            "again, and check the host's shell start-up files if it happens again")


def _deploy_body(apps=()) -> str:
    return (shell.facts_script()
            + shell.files_script(files_to_read() + app_files(apps), [lay.lib for lay in all_layouts()],
                                 MANAGED_JAR_GLOBS))


def deploy_script(apps=()) -> str:
    """What deploy reads of every host: the host, its packages and services, listeners, the
    files it plans from (the applications' too), and the jars of MSM's family in Tomcat's lib;
    ended by the end marker."""
    return end_marked(_deploy_body(apps))


def status_script(memcached_nodes=(), apps=(), address: str = "", port: int = 8080) -> str:
    """Deploy's facts plus the running Tomcat's cluster and MSM log lines and, on a Tomcat host,
    every memcached node's stats as seen from it and each application's answer on this node."""
    contexts = sorted({p for lay in all_layouts() for p in (lay.context_xml, lay.app_context)})
    probe = shell.memcached_probe_script(memcached_nodes)
    return end_marked(_deploy_body(apps) + shell.membership_script()
            # only a Tomcat whose context names memcached nodes (MSM) asks them: not in delta mode
            + (f"if grep -qs memcachedNodes {' '.join(shell.q(p) for p in contexts)}; then\n{probe}fi\n"
               if probe else "")
            + (shell.app_http_script(address, port, [a.context for a in apps]) if address else "")
            # the cluster's packages: versions, pending updates, restarts owed (tcsession.packages)
            + shell.packages_script(PACKAGE_PATTERN, (*shell.TOMCAT_UNITS, "nginx", "memcached")))


def gather(remote, hosts, apps=()) -> dict[str, "HostFacts"]:
    """Deploy's facts of `hosts` in one round trip each (in parallel), parsed; any host that was
    not reached or whose answer cannot be read stops here, before anything changes."""
    results = remote.run_all(hosts, deploy_script(apps))
    require_ok(results, "reading facts")
    for name, r in results.items():
        if not complete(r.stdout):
            raise TcsessionError(incomplete(name))
    return {name: parse_facts(r.stdout, name) for name, r in results.items()}


def gather_reachable(remote, hosts, apps=()) -> tuple[dict[str, "HostFacts"], list[str]]:
    """Like `gather`, for hosts whose absence does not stop a deploy (the Tomcats being removed
    from the cluster: one may be gone already): the facts of those that answered, and a note for
    each that did not."""
    results = remote.run_all(hosts, deploy_script(apps))
    facts, notes = {}, []
    for name, r in results.items():
        if r.ok and complete(r.stdout):
            facts[name] = parse_facts(r.stdout, name)
        elif r.ok:
            notes.append(f"{incomplete(name)} (remove = true: it is taken out of nginx and its peers' "
                         "configuration all the same)")
        else:
            notes.append(f"{name} (remove = true) did not answer ({r.why()}); it is taken out of nginx and "
                         "its peers' configuration, but its services could not be stopped")
    return facts, notes


def require_ok(results: dict, what: str) -> None:
    """Every host answered (else TcsessionError; UnreachableError, exit 3, when a host was not
    reached at all: a connection refused or timed out, nothing run on it)."""
    failed = [r for r in results.values() if not r.ok]
    if failed:
        detail = "; ".join(r.why() if r.why().startswith(f"{r.host} ") else f"{r.host}: {r.why()}" for r in failed)
        message = f"{what} failed on {len(failed)} host(s), nothing changed after it: {detail}"
        unreached = {r.host: r.why() for r in failed if r.exit is None}
        if unreached:
            raise UnreachableError(message, unreached)
        raise TcsessionError(message)


# --------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True)
class FileFact:
    path: str
    content: bytes | None  # None: the file does not exist
    mode: str = ""  # octal, e.g. "644"
    owner: str = ""  # user:group
    link: str | None = None  # a symlink to this target (content not read)


@dataclasses.dataclass(frozen=True)
class HostFacts:
    os: dict
    hostname: str
    system_state: str
    failed_units: tuple[str, ...]
    package_manager: str | None
    packages: dict  # name -> version, installed only
    available: tuple[str, ...]  # installable package names the plan may ask for
    active: dict  # unit -> "active" / "inactive" / "failed" / ...
    listeners: tuple[Listener, ...]
    files: dict  # path -> FileFact
    cluster_log: str = ""  # membership and MSM lines since the running Tomcat started (status only)
    candidates: dict = dataclasses.field(default_factory=dict)  # name -> the version an install would bring (apt)
    memcached: dict = dataclasses.field(default_factory=dict)  # "addr:port" -> stats seen from here (status)
    app_http: dict = dataclasses.field(default_factory=dict)  # context -> HTTP status on this node (status)
    preflight: dict = dataclasses.field(default_factory=dict)  # section (without "pf-") -> lines (preflight)
    upgrades: HostPackages | None = None  # the cluster's packages and restarts owed (status)
    # the distribution's automatic upgraders (unattended-upgrades, needrestart, dnf-automatic ...)
    automatic: unattended.Upgraders = dataclasses.field(default_factory=unattended.Upgraders)

    @property
    def tomcat(self) -> Layout | None:
        """The installed Tomcat's layout (None: no Tomcat package)."""
        return installed_tomcat(self.packages)

    def content(self, path: str) -> bytes | None:
        fact = self.files.get(path)
        return fact.content if fact is not None else None

    def applied(self, unit: str) -> str | None:
        """The digest of the configuration `unit` last started with (state.applied_path)."""
        data = self.content(state.applied_path(unit))
        return data.decode("utf-8", "replace").strip() if data is not None else None

    @property
    def os_short(self) -> str:
        """'debian 12 (bookworm)', 'centos 7', 'rocky 9.4'."""
        codename = self.os.get("VERSION_CODENAME")
        short = f"{self.os.get('ID', '?')} {self.os.get('VERSION_ID', '')}".strip()
        return f"{short} ({codename})" if codename else short

    @property
    def os_pretty(self) -> str:
        return self.os.get("PRETTY_NAME") or f"{self.os.get('ID', '?')} {self.os.get('VERSION_ID', '')}".strip()


def preflight_sections(sections: dict[str, list[str]]) -> dict[str, list[str]]:
    """What shell.preflight_facts_script printed: its sections, without their "pf-" prefix."""
    return {k[3:]: v for k, v in sections.items() if k.startswith("pf-")}


def split_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def parse_files(sections: dict[str, list[str]]) -> dict[str, FileFact]:
    """shell.files_script's answer (and the per-file `@@file <path> <mode> <owner>` + base64
    sections of older captures). Raises TcsessionError when the bytes do not add up to the sizes
    stat printed: a file changed while it was read."""
    files: dict[str, FileFact] = {}
    for header, body in sections.items():
        if header.startswith("link "):
            path, target = header[len("link "):].split(" ", 1)
            files[path] = FileFact(path, None, link=target)
        elif header.startswith("nofile "):
            path = header[len("nofile "):]
            files[path] = FileFact(path, None)
        elif header.startswith("file "):
            path, mode, owner = header[len("file "):].rsplit(" ", 2)
            files[path] = FileFact(path, base64.b64decode("".join(body), validate=True), mode, owner)
    stats = [line.split(" ", 3) for line in sections.get("stat", []) if line.strip()]
    blob = base64.b64decode("".join(sections.get("blob", [])), validate=True)
    if sum(int(size) for size, *_ in stats) != len(blob):
        raise TcsessionError(f"{len(stats)} files' sizes add up to {sum(int(s[0]) for s in stats)} bytes but "
                             f"{len(blob)} were read: a file changed while it was read; run again")
    offset = 0
    for size, mode, owner, path in stats:
        files[path] = FileFact(path, blob[offset:offset + int(size)], mode, owner)
        offset += int(size)
    return files


def parse_units(text: str) -> dict:
    """The units' `show -p Id,ActiveState` answer (blocks separated by blank lines) ->
    {unit: state}."""
    active = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        unit = props.get("Id", "").removesuffix(".service")
        if unit:
            active[unit] = props.get("ActiveState", "unknown")
    return active


def parse_facts(text: str, host: str = "host") -> HostFacts:
    """Raises TcsessionError naming the host and what it sent when the answer cannot be read
    (a truncated or garbled answer), never another exception."""
    try:
        return _parse_facts(text)
    except TcsessionError as e:
        raise TcsessionError(f"{host}: could not read its facts: {e}") from None
    except (ValueError, IndexError, KeyError) as e:
        tail = text.strip().splitlines()[-1][:80] if text.strip() else "nothing"
        detail = " ".join(str(e).split())[:120] or "a part of it is not in the expected form"
        raise TcsessionError(f"{host}: could not read its facts (unexpected content: {detail}); "
                             f"its answer ended with {tail!r}; run the command again, or check the "
                             "host's shell (a login banner or profile printing to stdout?)") from None


def _parse_facts(text: str) -> HostFacts:
    s = split_sections(text)
    first = lambda name: (s.get(name) or [""])[0].strip()  # noqa: E731
    packages = {}
    for line in s.get("packages", []):
        parts = line.split()
        if len(parts) >= 2:
            packages[parts[0]] = parts[1]
    active = parse_units("\n".join(s.get("active", [])))
    listeners = parse_ss("\n".join(s.get("ss-tcp", []))) + parse_ss(
        "\n".join(s.get("ss-udp", [])), proto="udp")
    return HostFacts(
        os=parse_os_release("\n".join(s.get("os-release", []))),
        hostname=first("hostname"),
        system_state=first("system") or "unknown",
        failed_units=tuple(l.split()[0] for l in s.get("failed", []) if l.strip()),
        package_manager=first("pkgmgr") or None,
        packages=packages,
        available=tuple(l.split()[0] for l in s.get("available", []) if l.strip()),
        candidates={l.split()[0]: l.split()[1] for l in s.get("available", []) if len(l.split()) >= 2},
        active=active,
        listeners=listeners,
        files=parse_files(s),
        cluster_log="\n".join(s.get("cluster-log", [])),
        memcached=parse_memcached_probe(text),
        upgrades=parse_packages(s) if "pkg-installed" in s else None,
        app_http={h[len("app-http "):]: (b[0].strip() if b else "000") for h, b in s.items()
                  if h.startswith("app-http ")},
        preflight=preflight_sections(s),
        automatic=unattended.parse_upgraders(s.get("automatic")),
    )


_MEMBER_RE = re.compile(
    r"(?P<what>member added|[Mm]ember disappeared)\S*:\[.*?tcp://(?:\{(?P<ip>[-\d, ]+)\}|(?P<dotted>[\d.]+)):(?P<port>\d+)")


def parse_members(log: str) -> tuple[str, ...]:
    """The cluster members a Tomcat currently sees ("a.b.c.d:port"), from its log lines in order:
    `Replication member added` adds, `member disappeared` removes."""
    members: dict[str, None] = {}
    for m in _MEMBER_RE.finditer(log):
        octets = ([int(x) & 0xFF for x in m.group("ip").split(",")] if m.group("ip")
                  else [int(x) for x in m.group("dotted").split(".")])  # a StaticMember's
        key = ".".join(str(o) for o in octets) + ":" + m.group("port")
        if "added" in m.group("what"):
            members[key] = None
        else:
            members.pop(key, None)
    return tuple(members)
