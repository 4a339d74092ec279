"""Facts: what is on a host, read in one round trip and parsed by pure code.

`FACTS_SCRIPT` is a POSIX shell script that prints `@@section` headers followed by raw
command output; `parse_facts` turns that text into a `HostFacts` value. Nothing here decides
anything: the plan reads facts, the status view shows them.
"""

from __future__ import annotations

import base64
import dataclasses
import re

from tcsession.probes import Listener, parse_memcached_probe, parse_os_release, parse_ss

# Where each distribution family keeps Tomcat (see shared notes, "Where things live").
# Probed in this order; the first server.xml found wins.
TOMCAT_LAYOUTS = (
    # (package, unit, conf dir, CATALINA_BASE, lib dir, JVM options file)
    ("tomcat11", "tomcat11", "/etc/tomcat11", "/var/lib/tomcat11", "/var/lib/tomcat11/lib", "/etc/default/tomcat11"),
    ("tomcat10", "tomcat10", "/etc/tomcat10", "/var/lib/tomcat10", "/var/lib/tomcat10/lib", "/etc/default/tomcat10"),
    ("tomcat9", "tomcat9", "/etc/tomcat9", "/var/lib/tomcat9", "/var/lib/tomcat9/lib", "/etc/default/tomcat9"),
    ("tomcat", "tomcat", "/etc/tomcat", "/var/lib/tomcat", "/usr/share/tomcat/lib", "/etc/sysconfig/tomcat"),
)

FACTS_SCRIPT = r"""
export LC_ALL=C
echo @@os-release; cat /etc/os-release 2>/dev/null
echo @@hostname; hostname
echo @@system; systemctl is-system-running 2>&1
echo @@failed; systemctl --failed --no-legend --plain 2>/dev/null
echo @@pkgmgr; for p in apt-get dnf yum; do command -v $p >/dev/null 2>&1 && echo $p; done
echo @@packages
if command -v dpkg-query >/dev/null 2>&1; then
  pkgs=$(dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\n' tomcat11 tomcat10 tomcat9 tomcat nginx memcached curl 2>/dev/null | awk '$3 ~ /^ii/ {print $1, $2}')
else
  pkgs=$(rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\n' tomcat nginx memcached curl 2>/dev/null | grep -v 'not installed')
fi
echo "$pkgs"
echo @@active
systemctl show -p Id,ActiveState tomcat11 tomcat10 tomcat9 tomcat nginx memcached 2>/dev/null
echo @@available
# Only asked when something is missing (it is the slowest question here).
case "$pkgs" in *tomcat*|*nginx*) ;; *)
if command -v apt-cache >/dev/null 2>&1; then
  apt-cache policy tomcat11 tomcat10 tomcat9 nginx memcached 2>/dev/null | awk '/^[a-z]/{p=$1; sub(":$","",p)} /Candidate:/{ if ($2!="(none)") print p}'
elif command -v rpm >/dev/null 2>&1; then echo tomcat; echo nginx; echo memcached
fi;;
esac
echo @@ss-tcp; ss -Hntl 2>/dev/null
echo @@ss-udp; ss -Hnul 2>/dev/null
"""


def files_script(paths: list[str]) -> str:
    """Shell that prints each file as `@@file <path> <mode> <owner>:<group>` + base64, or `@@nofile`."""
    out = []
    for p in paths:
        q = "'" + p.replace("'", "'\\''") + "'"
        out.append(
            f"if [ -L {q} ]; then echo \"@@link {p} $(readlink {q})\"; "
            f"elif [ -f {q} ]; then echo \"@@file {p} $(stat -c '%a %U:%G' {q})\"; base64 -w0 {q}; echo; "
            f"else echo '@@nofile {p}'; fi")
    return "\n".join(out) + "\n"


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
    memcached: dict = dataclasses.field(default_factory=dict)  # "addr:port" -> stats seen from here (status)

    @property
    def os_short(self) -> str:
        """'debian 12 (bookworm)', 'centos 7', 'rocky 9.4'."""
        codename = self.os.get("VERSION_CODENAME")
        short = f"{self.os.get('ID', '?')} {self.os.get('VERSION_ID', '')}".strip()
        return f"{short} ({codename})" if codename else short

    @property
    def os_pretty(self) -> str:
        return self.os.get("PRETTY_NAME") or f"{self.os.get('ID', '?')} {self.os.get('VERSION_ID', '')}".strip()


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
            files[path] = FileFact(path, base64.b64decode("".join(body)), mode, owner)
    return files


def parse_units(text: str) -> dict:
    """`systemctl show -p Id,ActiveState UNIT...` (blocks separated by blank lines) ->
    {unit: state}."""
    active = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        unit = props.get("Id", "").removesuffix(".service")
        if unit:
            active[unit] = props.get("ActiveState", "unknown")
    return active


def parse_facts(text: str) -> HostFacts:
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
        available=tuple(l.strip() for l in s.get("available", []) if l.strip()),
        active=active,
        listeners=listeners,
        files=parse_files(s),
        cluster_log="\n".join(s.get("cluster-log", [])),
        memcached=parse_memcached_probe(text),
    )


def tomcat_major(version: str) -> int | None:
    """'10.1.60-1~deb12u1' -> 10, '7.0.76-16.el7_9' -> 7, '2:9.0.43-2' -> 9."""
    m = re.match(r"(?:\d+:)?(\d+)\.", version)
    return int(m.group(1)) if m else None


# Cluster membership as Tomcat logged it since the running Tomcat started.
MEMBERSHIP_SCRIPT = r"""
echo @@cluster-log
for u in tomcat11 tomcat10 tomcat9 tomcat; do
  if [ "$(systemctl is-active $u 2>/dev/null)" = active ]; then
    since="$(systemctl show -p ActiveEnterTimestamp --value $u)"
    journalctl -u $u --since "$since" --no-pager -o cat 2>/dev/null \
      | grep -E 'member added|[Mm]ember disappeared|[Mm]ember added|session state|no members active|MemcachedSessionService|starts initialization|finished initialization|^- (failover )?node ids:|SEVERE|tcsession-standin' | tail -n 200
    # Debian's SystemdFormatter puts the level into the journal's priority, not the text
    journalctl -u $u --since "$since" -p err --no-pager -o cat 2>/dev/null \
      | grep -vE '^[[:space:]]+(at |\.\.\. )' | sed 's/^/SEVERE /' | tail -n 20
  fi
done
"""

_MEMBER_RE = re.compile(
    r"(?P<what>member added|[Mm]ember disappeared)\S*:\[.*?tcp://\{(?P<ip>[-\d, ]+)\}:(?P<port>\d+)")


def parse_members(log: str) -> tuple[str, ...]:
    """The cluster members a Tomcat currently sees ("a.b.c.d:port"), from its log lines in order:
    `Replication member added` adds, `member disappeared` removes."""
    members: dict[str, None] = {}
    for m in _MEMBER_RE.finditer(log):
        octets = [int(x) & 0xFF for x in m.group("ip").split(",")]
        key = ".".join(str(o) for o in octets) + ":" + m.group("port")
        if "added" in m.group("what"):
            members[key] = None
        else:
            members.pop(key, None)
    return tuple(members)
