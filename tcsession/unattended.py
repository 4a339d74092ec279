"""The distribution's own upgrades against the cluster (`[packages] automatic`).

Debian and Ubuntu run unattended-upgrades from apt-daily-upgrade.timer (06:00 plus up to 60 min
of random delay). The packages' own maintainer scripts restart what they upgrade (tomcat10's and
memcached's postinst run `deb-systemd-invoke restart`, nginx's `invoke-rc.d nginx upgrade`), and
needrestart, when its mode is automatic (`$nrconf{restart} = 'a'`), restarts every service that
still maps a replaced library (a JRE update: every Tomcat). Both happen on every host within the
same hour, undrained. The RHEL family: dnf-automatic (dnf-automatic-install.timer, or
dnf-automatic.timer with `apply_updates = yes`), dnf5-automatic, CentOS 7's yum-cron.

What is read (shell.automatic_script, in the facts every command reads) and parsed here:
unattended-upgrades installed and enabled (`apt-config dump`: APT::Periodic::Enable and
::Unattended-Upgrade, the timer enabled), the effective Package-Blacklist, needrestart's effective
restart mode and, per cluster unit, whether its override_rc lets it restart the unit (needrestart's
own configuration evaluated by perl, conf.d included), dnf-automatic / yum-cron timers and their
apply_updates, and the cluster's packages installed on the host.

`[packages] automatic = "hold"` writes two files tcsession owns (recorded in the deploy's manifest
like every file, so rollback removes them; "warn" removes them too):

- APT_HOLD: `Unattended-Upgrade::Package-Blacklist` entries for the host's cluster packages. They
  are Python regular expressions matched with `re.match` (anchored at the start only) since
  unattended-upgrades 0.70 (2011) up to 2.13; each entry ends in `$` so that "nginx" does not also
  hold "nginx-something-else". apt appends list entries across apt.conf.d files, so the
  operator's 50unattended-upgrades keeps its own.
- NEEDRESTART_CONF: `$nrconf{override_rc}` entries (read from needrestart.conf's conf.d loop)
  that keep needrestart from restarting the host's cluster units: it lists them as deferred.
  Written only where needrestart is installed.

dnf-automatic reads one configuration file (/etc/dnf/automatic.conf, whose [base] section
overrides dnf.conf) and has no drop-in directory: holding packages there means editing the
operator's file, so tcsession only warns and names the fix. Pure: parses and renders text.
"""

from __future__ import annotations

import dataclasses
import re

from tcsession.errors import TcsessionError

APT_HOLD = "/etc/apt/apt.conf.d/51tcsession-hold"
NEEDRESTART_CONF = "/etc/needrestart/conf.d/tcsession.conf"
CHECK = "automatic upgrades"
FIX = 'set [packages] automatic = "hold" in the inventory and deploy'

#: The cluster's packages per role, as unattended-upgrades blacklist entries (each ends in $).
TOMCAT_PATTERNS = ("tomcat[0-9]*(-[a-z]+)?$", "libtomcat[0-9]*-java$",
                   "openjdk-[0-9]+-(jre|jdk)(-headless)?$", "default-(jre|jdk)(-headless)?$")
MEMCACHED_PATTERNS = ("memcached$",)
NGINX_PATTERNS = ("nginx(-[a-z]+)?$", "libnginx-mod-.+$")
#: The cluster's packages as dpkg-query / rpm globs (what the facts list when installed).
PACKAGE_GLOBS = ("tomcat*", "libtomcat*", "openjdk-*", "default-jre*", "default-jdk*", "java-*-openjdk*",
                 "nginx*", "libnginx-mod-*", "memcached")
#: The units needrestart is asked about (whether its configuration lets it restart them).
UNITS = ("tomcat11", "tomcat10", "tomcat9", "tomcat", "nginx", "memcached")
#: Timers and services of the RHEL family's upgraders, and the files with their apply_updates.
RPM_TIMERS = ("dnf-automatic.timer", "dnf-automatic-install.timer", "dnf5-automatic.timer", "yum-cron.service")
RPM_CONFS = ("/etc/dnf/automatic.conf", "/etc/yum/yum-cron.conf")
RPM_PACKAGES = ("dnf-automatic", "dnf5-plugin-automatic", "yum-cron")
#: Debian's upgraders (their version and dpkg status: `pkg` lines).
APT_PACKAGES = ("unattended-upgrades", "needrestart")
APT_TIMER = "apt-daily-upgrade.timer"


@dataclasses.dataclass(frozen=True)
class Upgraders:
    """What one host's automatic upgraders are set to do (parse_upgraders)."""

    read: bool = False  # the section was there (an older capture has none)
    packages: dict = dataclasses.field(default_factory=dict)  # upgrader package -> version (installed)
    cluster: tuple[str, ...] = ()  # the cluster's packages installed (PACKAGE_GLOBS)
    timers: dict = dataclasses.field(default_factory=dict)  # unit -> `systemctl is-enabled`
    apt: dict = dataclasses.field(default_factory=dict)  # APT::Periodic::* -> value
    blacklist: tuple[str, ...] = ()  # Unattended-Upgrade::Package-Blacklist, every file's
    needrestart_mode: str = ""  # effective $nrconf{restart} ("" when needrestart is not there)
    needrestart_units: dict = dataclasses.field(default_factory=dict)  # unit -> True: it may restart it
    needrestart_error: str = ""  # its configuration did not evaluate
    apply_updates: dict = dataclasses.field(default_factory=dict)  # conf file -> True/False

    @property
    def unattended(self) -> bool:
        """unattended-upgrades installed and run: APT::Periodic::Enable not 0, ::Unattended-Upgrade
        not 0 (a number of days, or "always"), and apt-daily-upgrade.timer enabled."""
        if "unattended-upgrades" not in self.packages:
            return False
        every = self.apt.get("APT::Periodic::Unattended-Upgrade", "0")
        return (self.apt.get("APT::Periodic::Enable", "1") != "0" and every not in ("0", "")
                and self.timers.get(APT_TIMER) in ("enabled", "static", "enabled-runtime"))

    @property
    def needrestart(self) -> bool:
        return "needrestart" in self.packages

    def rpm_upgraders(self) -> list[str]:
        """The RHEL family's upgraders that install updates, each with what runs it."""
        on = lambda u: self.timers.get(u) in ("enabled", "enabled-runtime", "static")  # noqa: E731
        out = []
        if on("dnf-automatic-install.timer"):
            out.append("dnf-automatic (dnf-automatic-install.timer)")
        if on("dnf-automatic.timer") and self.apply_updates.get("/etc/dnf/automatic.conf"):
            out.append("dnf-automatic (dnf-automatic.timer, apply_updates = yes in /etc/dnf/automatic.conf)")
        if on("dnf5-automatic.timer") and self.apply_updates.get("/etc/dnf/automatic.conf"):
            out.append("dnf5-automatic (dnf5-automatic.timer, apply_updates = yes in /etc/dnf/automatic.conf)")
        if on("yum-cron.service") and self.apply_updates.get("/etc/yum/yum-cron.conf"):
            out.append("yum-cron (apply_updates = yes in /etc/yum/yum-cron.conf)")
        return out


_APT_LINE = re.compile(r'^(?P<key>[A-Za-z0-9:_-]+?)(?P<list>::)? "(?P<value>(?:[^"\\]|\\.)*)";$')
_YES = ("1", "yes", "true", "on")


def parse_upgraders(lines: list[str] | None) -> Upgraders:
    """shell.automatic_script's lines (`pkg NAME VERSION STATUS`, `cluster NAME`, `timer UNIT
    STATE`, `apt <apt-config dump line>`, `nr restart MODE`, `nr unit UNIT 0|1`, `nr error TEXT`,
    `conf FILE apply_updates = VALUE`). None (no section): nothing read."""
    if lines is None:
        return Upgraders()
    packages, cluster, timers, apt, units, apply = {}, [], {}, {}, {}, {}
    blacklist: list[str] = []
    mode, error = "", ""
    for line in lines:
        kind, _, rest = line.strip().partition(" ")
        if kind == "pkg":
            parts = rest.split()
            if len(parts) >= 3 and parts[2].startswith("ii"):
                packages[parts[0]] = parts[1]
        elif kind == "cluster" and rest:
            cluster.append(rest.split()[0])
        elif kind == "timer":
            unit, _, state = rest.partition(" ")
            timers[unit] = state.strip()
        elif kind == "apt":
            m = _APT_LINE.match(rest.strip())
            if not m:
                continue
            if m["key"] == "Unattended-Upgrade::Package-Blacklist" and m["list"]:
                blacklist.append(m["value"].replace('\\"', '"'))
            elif not m["list"]:
                apt[m["key"]] = m["value"]
        elif kind == "nr":
            what, _, value = rest.partition(" ")
            if what == "restart":
                mode = value.strip()
            elif what == "unit":
                unit, _, may = value.partition(" ")
                units[unit.removesuffix(".service")] = may.strip() == "1"
            elif what == "error":
                error = (error + " " + value.strip()).strip()[:300]
        elif kind == "conf":
            path, _, setting = rest.partition(" ")
            value = setting.split("=", 1)[1].strip().lower() if "=" in setting else ""
            apply[path] = value in _YES
    return Upgraders(True, packages, tuple(cluster), timers, apt, tuple(blacklist), mode, units, error, apply)


# --------------------------------------------------------------------------- what a host runs


def patterns(role: str, memcached: bool = False) -> tuple[str, ...]:
    """The blacklist entries of a host of `role` (with memcached: a Tomcat host running it)."""
    if role == "nginx":
        return NGINX_PATTERNS
    return TOMCAT_PATTERNS + (MEMCACHED_PATTERNS if memcached else ())


def cluster_packages(role: str, installed: tuple[str, ...]) -> list[str]:
    """The installed packages (from the facts) that belong to this host's part of the cluster."""
    return [p for p in installed if any(re.match(rx, p) for rx in patterns(role, memcached=True))]


def held(name: str, blacklist: tuple[str, ...]) -> bool:
    """As unattended-upgrades decides (is_pkgname_in_blacklist: re.match of each entry)."""
    for rx in blacklist:
        try:
            if re.match(rx, name):
                return True
        except re.error:
            continue
    return False


def units_for(role: str, tomcat_unit: str | None, memcached: bool) -> tuple[str, ...]:
    """The cluster's units on a host (needrestart's override_rc keys)."""
    if role == "nginx":
        return ("nginx",)
    return ((tomcat_unit,) if tomcat_unit else ()) + (("memcached",) if memcached else ())


# --------------------------------------------------------------------------- rendering


def render_apt_hold(entries: tuple[str, ...]) -> bytes:
    for rx in entries:
        if '"' in rx or not rx.endswith("$"):
            raise TcsessionError(f"unattended: blacklist entry {rx!r} must end in $ and hold no quote (a bug)")
    lines = ['// Managed by tcsession ([packages] automatic = "hold"): the cluster\'s packages on this host',
             "// are upgraded by tcsession (drained restarts), not by unattended-upgrades. Entries are Python",
             "// regular expressions matched at the start of a package name; each ends in $. Removed by",
             '// automatic = "warn" or by rollback.',
             "Unattended-Upgrade::Package-Blacklist {"]
    lines += [f'    "{rx}";' for rx in entries]
    lines.append("};")
    return ("\n".join(lines) + "\n").encode()


def render_needrestart(units: tuple[str, ...]) -> bytes:
    lines = ['# Managed by tcsession ([packages] automatic = "hold"): needrestart lists these units as',
             "# deferred instead of restarting them (tcsession restarts them drained). Removed by",
             '# automatic = "warn" or by rollback.']
    lines += [f"$nrconf{{override_rc}}{{qr(^{re.escape(u)}\\.service$)}} = 0;" for u in units]
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- judging


def judge(role: str, up: Upgraders, tomcat_unit: str | None, memcached: bool, setting: str = "warn",
          package_manager: str | None = None) -> tuple[str, bool, str]:
    """("automatic upgrades", True, detail): never a failure. A detail starting "warning: " names
    each upgrader that can upgrade or restart this host's cluster services undrained, and the fix."""
    if not up.read:
        return (CHECK, True, "not reported")
    services = units_for(role, tomcat_unit, memcached) or (("nginx",) if role == "nginx" else ("the Tomcat",))
    shown = ", ".join(services)
    installed = cluster_packages(role, up.cluster)
    risks, fixes = [], []
    if up.unattended:
        exposed = [p for p in installed if not held(p, up.blacklist)]
        if exposed or not installed:
            what = ", ".join(exposed[:6]) + (" ..." if len(exposed) > 6 else "") if exposed else "its packages once installed"
            risks.append(f"unattended-upgrades ({APT_TIMER}) upgrades {what}, whose package scripts restart {shown}")
    if up.needrestart_error:
        risks.append(f"needrestart's configuration did not evaluate ({up.needrestart_error[:120]})")
    elif up.needrestart and up.needrestart_mode == "a":
        restarted = [u for u in services if up.needrestart_units.get(u, True)]
        if restarted:
            risks.append(f"needrestart ($nrconf{{restart}} = 'a') restarts {', '.join(restarted)} after a library "
                         "it uses is upgraded (a JRE or libc update)")
    if risks:
        fixes.append(FIX if setting == "warn" else "deploy to write tcsession's hold files")
    rpm = up.rpm_upgraders()
    if rpm:
        risks.append(f"{' and '.join(rpm)} installs updates of {shown}'s packages, whose scriptlets restart them")
        fixes.append('tcsession cannot hold them without editing your file: add excludepkgs=tomcat* nginx* '
                     'memcached* java-*-openjdk* to [base] in /etc/dnf/automatic.conf (yum-cron: exclude= in '
                     '/etc/yum/yum-cron.conf), or disable the timer')
    if risks:
        return (CHECK, True, f"warning: {'; '.join(risks)} (undrained, on every host in the same hour); "
                             f"{'; or '.join(fixes)}")
    if up.unattended or up.needrestart:
        parts = []
        if up.unattended:
            parts.append("unattended-upgrades on, the cluster's packages held" if installed
                         else "unattended-upgrades on, nothing of the cluster's installed")
        if up.needrestart:
            parts.append(f"needrestart ($nrconf{{restart}} = '{up.needrestart_mode or 'i'}') "
                         + ("leaves " + shown + " alone" if up.needrestart_mode == "a" else "lists only"))
        return (CHECK, True, "; ".join(parts))
    if package_manager in ("dnf", "yum") or any(p in up.packages for p in RPM_PACKAGES):
        return (CHECK, True, "no automatic upgrader installs updates")
    return (CHECK, True, "no automatic upgrader enabled")


def check(host, facts, setting: str = "warn") -> tuple[str, bool, str] | None:
    """judge() for an inventory host (`role`) and its HostFacts (status and preflight); None when
    the facts have no such section (a capture older than it)."""
    if not facts.automatic.read:
        return None
    layout = facts.tomcat if host.role == "tomcat" else None
    memcached = host.role == "tomcat" and "memcached" in facts.packages
    return judge(host.role, facts.automatic, layout.unit if layout else None, memcached, setting,
                 facts.package_manager)
