"""The cluster's packages: what each host runs, what its sources offer, and `upgrade`'s plan.

Pure: the facts come from shell.packages_script (read by tcsession.upgrade); the plan is handed to
THE rollout (tcsession.rollout, order UPGRADE): every host's record first, then the Tomcats in
their drained waves with their packages installed while each is stopped (the same gates as a
deploy: serving, state received, members, the log gate), then memcached one host at a time, then
nginx last. Its rollback is the same plan with the versions the record keeps.

Groups of packages ("what the cluster runs"), by the service that runs their code:
- tomcat: the Tomcat package and its libraries (tomcat10, tomcat10-common, libtomcat10-java)
- java: the JRE (openjdk-17-jre-headless) the Tomcat runs on
- memcached: memcached (msm mode)
- nginx: nginx and its modules
"""

from __future__ import annotations

import dataclasses
import re

from tcsession.errors import TcsessionError, UsageError

GROUPS = {
    "tomcat": r"tomcat[0-9]*|tomcat[0-9]+-common|libtomcat[0-9]+-java",
    "java": r"openjdk-[0-9]+-jre(-headless)?",
    "memcached": r"memcached",
    "nginx": r"nginx(-common|-core|-light|-full|-extras)?|libnginx-mod-.*",
}
PATTERN = "^(" + "|".join(GROUPS.values()) + ")$"  # an ERE: the packages the facts script lists
UNIT_GROUPS = {"tomcat": ("tomcat", "java"), "memcached": ("memcached",), "nginx": ("nginx",)}


def group_of(name: str) -> str | None:
    return next((g for g, rx in GROUPS.items() if re.fullmatch(rx, name)), None)


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    installed: str
    installed_at: int = 0  # the install's time (epoch s; dpkg's .list file), 0: unknown
    candidate: str | None = None  # what an upgrade brings (None or == installed: nothing)
    versions: tuple[tuple[str, str], ...] = ()  # every version the sources (and dpkg) know, with its origin
    security: bool = False  # the candidate comes from a security archive

    @property
    def pending(self) -> bool:
        return self.candidate is not None and self.candidate != self.installed

    def available(self, version: str) -> bool:
        return any(v == version for v, _ in self.versions)


@dataclasses.dataclass(frozen=True)
class Running:
    """A service's main process: how long it has run, and files it still maps that were deleted
    (replaced by an upgrade since it started)."""

    unit: str
    pid: int
    started: int  # epoch s
    deleted: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class HostPackages:
    packages: dict  # name -> Package (the cluster's, installed)
    running: dict  # unit -> Running
    pending: tuple[tuple[str, str, str, bool], ...] = ()  # every pending upgrade: (name, from, to, security)

    def restart_owed(self, unit: str, group_key: str) -> str | None:
        """Why `unit` runs older code than is installed (None: it does not, or does not run):
        a package of its groups installed after it started, or deleted files it still maps."""
        run = self.running.get(unit)
        if run is None:
            return None
        newer = sorted(p.name for p in self.packages.values()
                       if group_of(p.name) in UNIT_GROUPS[group_key] and p.installed_at > run.started)
        if newer:
            return f"{', '.join(newer)} installed after it started"
        if run.deleted:
            return f"it still maps replaced files ({', '.join(run.deleted[:2])})"
        return None


def _security(origin: str) -> bool:
    return "security" in origin.lower()


def parse_policy(lines: list[str]) -> dict[str, tuple[str | None, str | None, tuple[tuple[str, str], ...]]]:
    """`apt-cache policy NAME...` -> name -> (installed, candidate, ((version, origin), ...))."""
    out: dict = {}
    name = None
    installed = candidate = None
    versions: list = []
    current = None
    for line in lines:
        if line and not line.startswith(" ") and line.endswith(":"):
            if name:
                out[name] = (installed, candidate, tuple(versions))
            name, installed, candidate, versions, current = line[:-1], None, None, [], None
        elif line.startswith("  Installed: "):
            v = line.split(":", 1)[1].strip()
            installed = None if v == "(none)" else v
        elif line.startswith("  Candidate: "):
            v = line.split(":", 1)[1].strip()
            candidate = None if v == "(none)" else v
        elif re.match(r"^ (\*\*\*| {3}) \S+ -?\d+$", line):
            current = line[5:].split()[0]
        elif current and re.match(r"^ {8}-?\d+ ", line):
            origin = line.split(None, 1)[1]
            if origin != "/var/lib/dpkg/status":
                versions.append((current, origin))
            elif not any(v == current for v, _ in versions):
                versions.append((current, "installed"))
    if name:
        out[name] = (installed, candidate, tuple(versions))
    return out


PENDING = re.compile(r"^Inst (\S+) \[([^\]]+)\] \((\S+) ([^\[]*?)\s*\[")


def parse_packages(sections: dict[str, list[str]]) -> HostPackages:
    """shell.packages_script's answer (split by facts.split_sections)."""
    policy = parse_policy(sections.get("pkg-policy", []))
    packages = {}
    for line in sections.get("pkg-installed", []):
        parts = line.split()
        if len(parts) != 3:
            continue
        name, version, at = parts
        _, candidate, versions = policy.get(name, (None, None, ()))
        origin = next((o for v, o in versions if v == candidate), "")
        packages[name] = Package(name, version, int(at) if at.isdigit() else 0, candidate, versions,
                                 bool(candidate and candidate != version and _security(origin)))
    running = {}
    for line in sections.get("svc-runs", []):
        if line.startswith("  "):
            if running:
                last = list(running)[-1]
                running[last] = dataclasses.replace(running[last], deleted=running[last].deleted + (line.strip(),))
            continue
        parts = line.split()
        if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
            unit, pid, age, now = parts[0], *map(int, parts[1:])
            running[unit] = Running(unit, pid, now - age)
    pending = []
    for line in sections.get("pkg-pending", []):
        m = PENDING.match(line)
        if m:
            pending.append((m.group(1), m.group(2), m.group(3), _security(m.group(4))))
    return HostPackages(packages, running, tuple(pending))


# --------------------------------------------------------------------------- what changes


def major_minor(version: str) -> str | None:
    """"10.1.60-1~deb12u1" -> "10.1" (an epoch "1:" skipped)."""
    m = re.match(r"^(?:\d+:)?(\d+)\.(\d+)", version)
    return f"{m.group(1)}.{m.group(2)}" if m else None


@dataclasses.dataclass(frozen=True)
class HostUpgrade:
    """One host's part of an upgrade: per unit, the packages (name, from, to) and why it restarts."""

    host: str
    by_unit: dict  # "tomcat" | "memcached" | "nginx" -> tuple[(name, from, to), ...]
    owed: dict  # same keys -> why a restart is owed without a package change

    @property
    def changes(self) -> tuple[tuple[str, str, str], ...]:
        return tuple(c for unit in ("tomcat", "memcached", "nginx") for c in self.by_unit.get(unit, ()))

    @property
    def empty(self) -> bool:
        return not self.changes and not self.owed


def parse_pins(text: str) -> dict[str, str]:
    """--to "tomcat10=10.1.60-1~deb12u1,memcached=1.6.18-1+deb12u1" -> {name: version}."""
    out = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        name, eq, version = item.partition("=")
        if not eq or not name or not version:
            raise UsageError(f"--to {item!r}: expected NAME=VERSION (e.g. tomcat10=10.1.60-1~deb12u1)")
        out[name] = version
    return out


def host_upgrade(host: str, role: str, pkgs: HostPackages, only: frozenset[str], pins: dict[str, str],
                 tomcat_unit: str | None, memcached: bool, security: bool = False) -> HostUpgrade:
    """What `upgrade` changes on one host: each of the cluster's packages in `only` (groups) to its
    candidate (or its pin), refused before any change when that is not a patch (another Tomcat
    major or minor line) or not available; and the restarts owed. `security`: every pending
    security update of the host besides, installed with its main service's packages."""
    by_unit: dict[str, list] = {}
    units = {"nginx": "nginx"} if role == "nginx" else {"tomcat": tomcat_unit, "memcached": "memcached" if memcached else None}
    for p in sorted(pkgs.packages.values(), key=lambda p: p.name):
        g = group_of(p.name)
        unit_key = next((k for k, groups in UNIT_GROUPS.items() if g in groups), None)
        if g not in only or unit_key not in units or units[unit_key] is None:
            continue
        target = pins.get(p.name, p.candidate)
        if target is None or target == p.installed:
            continue
        if g == "tomcat" and major_minor(target) != major_minor(p.installed):
            raise TcsessionError(
                f"{host}: {p.name} {p.installed} -> {target} is not a patch but a change of Tomcat line "
                f"({major_minor(p.installed)} -> {major_minor(target)}): every application and MSM may need "
                "migrating (9 -> 10 is javax -> jakarta); build a cluster on the new line instead. Nothing was changed")
        if not p.available(target):
            raise TcsessionError(f"{host}: {p.name} {target} is not available from the host's package sources "
                                 f"(it has: {', '.join(v for v, _ in p.versions) or 'none'}); nothing was changed")
        by_unit.setdefault(unit_key, []).append((p.name, p.installed, target))
    if security:
        main = "nginx" if role == "nginx" else "tomcat"
        have = {n for changes in by_unit.values() for n, _, _ in changes}
        for name, old, new, sec in pkgs.pending:
            if sec and name not in have and (group_of(name) is None):
                by_unit.setdefault(main, []).append((name, old, new))
    owed = {}
    for key, unit in units.items():
        if unit and key not in by_unit:
            why = pkgs.restart_owed(unit, key)
            if why:
                owed[key] = why
    return HostUpgrade(host, {k: tuple(v) for k, v in by_unit.items()}, owed)


def unknown_pins(pins: dict[str, str], hosts: dict[str, HostPackages]) -> list[str]:
    return sorted(n for n in pins if not any(n in hp.packages for hp in hosts.values()))


def rollback_upgrade(host: str, role: str, changed: tuple[tuple[str, str, str], ...], pkgs: HostPackages,
                     tomcat_unit: str | None, memcached: bool) -> HostUpgrade:
    """Undoing an upgrade on one host: each package back to its recorded version (refused, before
    any change, when the package sources no longer carry it)."""
    by_unit: dict[str, list] = {}
    missing = []
    for name, before, after in changed:
        now = pkgs.packages.get(name)
        if now is None or now.installed == before:
            continue
        if not now.available(before):
            missing.append(f"{name} {before}")
            continue
        g = group_of(name)
        key = next((k for k, groups in UNIT_GROUPS.items() if g in groups), "nginx" if role == "nginx" else "tomcat")
        by_unit.setdefault(key, []).append((name, now.installed, before))
    if missing:
        raise TcsessionError(f"{host}: the package sources no longer carry {', '.join(missing)}: the upgrade cannot be "
                             "undone here (add a source that has them, or install them by hand); nothing was changed")
    return HostUpgrade(host, {k: tuple(v) for k, v in by_unit.items()}, {})
