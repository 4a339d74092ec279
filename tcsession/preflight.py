"""`inv preflight`, also the first thing every deploy does: the failures users report most,
checked before anything changes. Pure judges over captured output, and the two round trips they
need besides the facts (the clock, timed from here; the multicast probe, on every Tomcat at once).

Each check is `(what, ok, detail)` per host, like status's; a failing check stops a deploy with
nothing changed. What each catches:

- `host name`: the host's own name resolving to a loopback address (Debian's `127.0.1.1` line in
  /etc/hosts): Tomcat's `auto` addresses and the libraries that resolve the local name advertise
  it, and the peers never connect (the cluster how-to's "common error").
- `clock`: skew against this machine and between hosts (captured `date +%s.%N`, the round trip's
  uncertainty allowed): MSM's maintainer asks first whether the clocks agree (expiry is judged on
  each node), and EncryptInterceptor's replay protection drops messages outside its window.
- `multicast`: a real send and receive on the configured group and port between every pair of
  Tomcats (multicast membership only): multicast does not cross many cloud and container
  networks; the fix is `membership = "static"`.
- `ports`: each port the cluster needs is free, or held by the service that should hold it (a
  port already taken stops Tomcat's receiver, memcached or nginx).
- `java`: the Java version against the Tomcat major (7: 6+, 8.5: 7+, 9: 8+, 10.1: 11+, 11: 17+).
- `jvm_route`: characters MSM and nginx accept (MSM splits its session ids at '-' and '.').
- `disk`: free space for the packages to install (and for the deploy's saved files).
- `automatic upgrades` (a warning, never a failure): unattended-upgrades, needrestart in automatic
  mode, dnf-automatic or yum-cron that can upgrade or restart this host's cluster services
  undrained (tcsession.unattended), and the fix: `[packages] automatic = "hold"`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import time

from tcsession import shell, unattended
from tcsession.errors import TcsessionError
from tcsession.facts import HostFacts, gather, preflight_sections, require_ok, split_sections
from tcsession.inventory import Host, Inventory, uses_multicast
from tcsession.modes import Mode, mode_named
from tcsession.probes import parse_ss

CLOCK_TOLERANCE = 2.0  # seconds, beyond the measurement's own uncertainty
JAVA_MIN = {7: 6, 8: 7, 9: 8, 10: 11, 11: 17}
INSTALL_KIB = 400 * 1024  # Tomcat with a headless JRE, nginx or memcached, and apt's cache
CHANGE_KIB = 50 * 1024  # saved files, jars, logs
_ROUTE_MSM = re.compile(r"^[A-Za-z0-9_]+$")
_ROUTE_NGINX = re.compile(r"^[A-Za-z0-9_-]+$")
_PROCESS = re.compile(r'users:\(\("([^"]+)"')

Check = tuple[str, bool, str]


@dataclasses.dataclass(frozen=True)
class HostPreflight:
    name: str
    role: str
    address: str
    checks: tuple[Check, ...] = ()

    @property
    def problems(self) -> list[str]:
        return [f"{what}: {detail}" for what, ok, detail in self.checks if not ok]

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "address": self.address, "ok": not self.problems,
                "checks": [{"check": w, "ok": ok, "detail": d} for w, ok, d in self.checks]}


@dataclasses.dataclass(frozen=True)
class PreflightReport:
    mode: str
    hosts: tuple[HostPreflight, ...]

    @property
    def ok(self) -> bool:
        return all(not h.problems for h in self.hosts)

    @property
    def problems(self) -> list[str]:
        return [f"{h.name}: {p}" for h in self.hosts for p in h.problems]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "mode": self.mode, "hosts": [h.to_dict() for h in self.hosts]}


# --------------------------------------------------------------------------- judges (pure)


def judge_resolve(lines: list[str] | None) -> Check:
    """`hostname` then the IPv4 addresses `getent ahostsv4` gives for it."""
    if not lines:
        return ("host name", True, "not reported")
    name, addresses = lines[0].strip(), [l.strip() for l in lines[1:] if l.strip()]
    loop = [a for a in addresses if _is_loopback(a)]
    if loop:
        return ("host name", False, f"{name} resolves to {', '.join(loop)} (/etc/hosts); map it to the host's own "
                                    f"address there or remove that line (Tomcat would advertise a loopback address)")
    return ("host name", True, f"{name} -> {', '.join(addresses)}" if addresses else f"{name} (not resolved: fine)")


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def parse_clock(stdout: str) -> float | None:
    try:
        return float(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def judge_clocks(samples: dict[str, tuple[float | None, float, float]],
                 tolerance: float = CLOCK_TOLERANCE) -> dict[str, Check]:
    """samples: host -> (its `date +%s.%N`, this machine's time before and after asking).
    A host fails when its offset from this machine, less the round trip's uncertainty, is beyond
    `tolerance`, or when it is that far from another host."""
    offsets = {}
    out: dict[str, Check] = {}
    for host, (remote, before, after) in samples.items():
        if remote is None:
            out[host] = ("clock", False, "no answer to date +%s.%N; check the host's date command")
            continue
        offsets[host] = (remote - (before + after) / 2, (after - before) / 2)
    for host, (off, unc) in offsets.items():
        worst = max(((abs(off - o) - unc - u, other, off - o) for other, (o, u) in offsets.items() if other != host),
                    default=(float("-inf"), "", 0.0))
        if abs(off) - unc > tolerance:
            out[host] = ("clock", False, f"{off:+.1f} s from this machine (allowed {tolerance:g} s); run NTP "
                                         f"(systemd-timesyncd or chrony) on every host")
        elif worst[0] > tolerance:
            out[host] = ("clock", False, f"{worst[2]:+.1f} s from {worst[1]} (allowed {tolerance:g} s); run NTP "
                                         f"(systemd-timesyncd or chrony) on every host")
        else:
            out[host] = ("clock", True, f"{off:+.3f} s from this machine (+/- {unc:.3f} s)")
    return out


def judge_multicast(outputs: dict[str, str | None], tomcats: list[str], group: str, port: int) -> dict[str, Check]:
    """outputs: Tomcat -> the probe's output (None: python3 missing). Each must hear every other."""
    out: dict[str, Check] = {}
    for name in tomcats:
        text = outputs.get(name)
        if text is None:
            out[name] = ("multicast", False, f"cannot test {group}:{port}: no python3 on the host; install python3 "
                                             f"for preflight, or use membership = \"static\" in [delta]")
            continue
        heard = {l.split()[1] for l in text.splitlines() if l.startswith("heard ") and len(l.split()) >= 2}
        missing = [t for t in tomcats if t != name and t not in heard]
        if "done" not in text.split():
            out[name] = ("multicast", False, f"the probe did not finish: {text.strip()[-200:] or 'no output'}")
        elif missing:
            out[name] = ("multicast", False, f"heard nothing on {group}:{port} from {', '.join(missing)}: multicast "
                                             f"is not delivered between these hosts; use membership = \"static\" "
                                             f"in [delta]")
        else:
            out[name] = ("multicast", True, f"{group}:{port} heard from {len(tomcats) - 1} peer(s)")
    return out


def needed_ports(inv: Inventory, host: Host, mode: Mode) -> list[tuple[str, int, tuple[str, ...], str]]:
    """(proto, port, process names allowed to hold it, what for)."""
    if host.role == "nginx":
        return [("tcp", host.http_port, ("nginx",), "nginx")] + (
            [("tcp", inv.tls.https_port, ("nginx",), "nginx HTTPS")] if inv.tls else [])
    out = [("tcp", host.http_port, ("java",), "Tomcat HTTP")]
    if mode.cluster:
        out.append(("tcp", inv.delta.receiver_port, ("java",), "cluster receiver"))
        if uses_multicast(inv.delta.membership):
            out.append(("udp", inv.delta.multicast_port, ("java", "python3"), "multicast membership"))
    if mode.memcached and host.memcached:
        out.append(("tcp", inv.msm.memcached_port, ("memcached",), "memcached"))
    return out


def judge_ports(inv: Inventory, host: Host, mode: Mode, lines: list[str] | None) -> Check:
    """`ss -Hntulp` lines: every needed port free or held by its service."""
    if lines is None:
        return ("ports", True, "not reported")
    held: dict[tuple[str, int], set[str]] = {}
    for line in lines:
        proto = "udp" if line.startswith("udp") else "tcp"
        rest = line.split(None, 1)[1] if line.split() and line.split()[0] in ("tcp", "udp") else line
        listeners = parse_ss(rest, proto)
        if not listeners:
            continue
        m = _PROCESS.search(line)
        held.setdefault((proto, listeners[0].port), set()).add(m.group(1) if m else "an unknown process")
    bad = []
    for proto, port, allowed, what in needed_ports(inv, host, mode):
        others = sorted(held.get((proto, port), set()) - set(allowed))
        if others:
            bad.append(f"{proto} {port} ({what}) is held by {', '.join(others)}")
    if bad:
        return ("ports", False, "; ".join(bad) + ": stop it or choose another port in the inventory")
    return ("ports", True, ", ".join(f"{p}/{pr}" for pr, p, _, _ in needed_ports(inv, host, mode)) + " free or ours")


def parse_java_major(line: str) -> int | None:
    """`openjdk version "17.0.13" 2024-10-15` -> 17; `java version "1.8.0_412"` -> 8."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', line or "")
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def judge_java(facts: HostFacts) -> Check:
    layout = facts.tomcat
    line = (facts.preflight.get("java") or [""])[0]
    if layout is None:
        return ("java", True, "Tomcat not installed yet: its package brings the Java it needs")
    java = parse_java_major(line)
    need = JAVA_MIN.get(layout.major)
    if java is None:
        return ("java", False, f"no java found for {layout.package}; install a Java {need} or newer runtime")
    if need and java < need:
        return ("java", False, f"Java {java} is too old for Tomcat {layout.major} (needs {need}+); install a newer JRE")
    return ("java", True, f"Java {java} for Tomcat {layout.major}")


def judge_route(host: Host, mode: Mode, inv: Inventory) -> Check:
    route = host.jvm_route
    if mode.memcached and not _ROUTE_MSM.match(route):
        return ("jvm_route", False, f'"{route}": MSM splits session ids at "-" and "."; use letters, digits and _ '
                                    f"only (jvm_route in [tomcat.{host.name}])")
    if not _ROUTE_NGINX.match(route):
        return ("jvm_route", False, f'"{route}": use letters, digits, - and _ only (jvm_route in [tomcat.{host.name}])')
    return ("jvm_route", True, route)


def judge_disk(lines: list[str] | None, installing: bool) -> Check:
    """`df -Pk /var /usr` lines: the least free space of the two against what the deploy needs."""
    if not lines:
        return ("disk", True, "not reported")
    free = [int(p[3]) for p in (l.split() for l in lines) if len(p) >= 6 and p[3].isdigit()]
    if not free:
        return ("disk", True, "not reported")
    need = INSTALL_KIB if installing else CHANGE_KIB
    least = min(free)
    if least < need:
        return ("disk", False, f"{least // 1024} MiB free on /var or /usr, {need // 1024} MiB needed"
                               f"{' for the packages' if installing else ''}; free some space")
    return ("disk", True, f"{least // 1024} MiB free")


def judge_firewall(inv: Inventory, facts: HostFacts) -> Check:
    """`[firewall] backend = "nftables"` beside an active firewalld: firewalld's own zones also
    decide (every table's input chain must accept a packet), and it is not driven by tcsession."""
    if inv.firewall != "nftables":
        return ("firewall", True, f"[firewall] backend = {inv.firewall!r}: tcsession leaves the host's firewall alone")
    if facts.active.get("firewalld") == "active":
        return ("firewall", False, "firewalld is active, and its zones decide too; open the cluster's ports in "
                                   "firewalld yourself and set [firewall] backend = \"none\", or stop firewalld")
    return ("firewall", True, "nftables: tcsession's table (inet tcsession) is the host's only cluster rule set")


#: What tcsession's nginx site needs: `proxy_http_version 1.1` (1.1.4); `map` with regexes,
#: `backup` servers and `proxy_next_upstream ... http_503` are older.
NGINX_MIN = (1, 1, 4)
#: open-source nginx's `sticky route` and the `drain` server parameter (mainline 1.29.6)
NGINX_STICKY = (1, 29, 6)


def judge_nginx(lines: list[str] | None) -> Check:
    """`nginx -v` ("nginx version: nginx/1.22.1"), when nginx is installed."""
    line = (lines or [""])[0].strip()
    if not line:
        return ("nginx", True, "not installed yet: deploy installs the distribution's package")
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", line)
    if not m:
        return ("nginx", True, f"version not recognised ({line[:60]}); assuming the site's directives work")
    v = tuple(int(x) for x in m.groups())
    shown = ".".join(map(str, v))
    if v < NGINX_MIN:
        return ("nginx", False, f"nginx {shown} is older than 1.1.4 (the site's proxy_http_version 1.1); "
                                "upgrade nginx (the distribution's or nginx.org's package)")
    extra = ("; it has sticky route and drain, which tcsession does not use yet (its map routing works on every version)"
             if v >= NGINX_STICKY else "; routing by jvmRoute with a map (no sticky/drain before 1.29.6)")
    return ("nginx", True, f"nginx {shown}{extra}")


def judge_selinux(lines: list[str] | None) -> Check:
    """`getenforce` then `getsebool httpd_can_network_connect` (the RHEL family; nothing elsewhere).
    Enforcing with the boolean off: nginx's connections to Tomcat are denied (`connect() ...
    (13: Permission denied)` in nginx's error log, a 502 for every request)."""
    lines = [l.strip() for l in (lines or []) if l.strip()]
    if not lines:
        return ("selinux", True, "no SELinux tools (not the RHEL family)")
    mode = lines[0]
    boolean = next((l for l in lines[1:] if l.startswith("httpd_can_network_connect")), "")
    if mode != "Enforcing":
        return ("selinux", True, f"{mode}: nothing enforced")
    if boolean.endswith("--> on"):
        return ("selinux", True, "Enforcing, httpd_can_network_connect on: nginx may connect to the Tomcats")
    return ("selinux", False, "Enforcing with httpd_can_network_connect off: nginx cannot connect to the Tomcats "
                              "(every request a 502); run setsebool -P httpd_can_network_connect 1 on this host")


def judge_tls(inv: Inventory) -> Check:
    """[tls]: the certificate and key on this machine (tcsession.tls.read_pair: they match, the
    name is covered, valid now, the chain in order)."""
    from tcsession import tls

    try:
        cert, _ = tls.read_pair(inv)
    except TcsessionError as e:
        return ("certificate and key", False, str(e))
    return ("certificate and key", True, f"{inv.tls.certificate.name} covers {inv.tls.server_name}, "
                                          f"{tls.days_left(cert)} days left, key matches")


def judge_host(inv: Inventory, host: Host, facts: HostFacts, mode: Mode, installing: bool,
               extra: list[Check] = ()) -> HostPreflight:
    pf = facts.preflight
    checks = [judge_resolve(pf.get("resolve")), *extra, judge_ports(inv, host, mode, pf.get("ss"))]
    if host.role == "tomcat":
        checks += [judge_java(facts), judge_route(host, mode, inv), judge_firewall(inv, facts)]
    else:
        checks += [judge_nginx(pf.get("nginx")), judge_selinux(pf.get("selinux"))]
        if inv.tls:
            checks.append(judge_tls(inv))
    checks.append(judge_disk(pf.get("disk"), installing))
    if (automatic := unattended.check(host, facts, inv.automatic)) is not None:  # a warning at most
        checks.append(automatic)
    return HostPreflight(host.name, host.role, host.address, tuple(checks))


# --------------------------------------------------------------------------- round trips


def measure_clocks(remote, hosts) -> dict[str, tuple[float | None, float, float]]:
    """One short timed round trip per host (after the facts: the connection is up)."""
    out = {}
    for h in hosts:
        before = time.time()
        r = remote.run(h, shell.clock_script(), timeout=10)
        after = time.time()
        out[h.name] = (parse_clock(r.stdout) if r.ok else None, before, after)
    return out


def probe_multicast(remote, inv: Inventory, facts: dict[str, HostFacts]) -> dict[str, str | None]:
    tomcats = [t for t in inv.tomcats if (facts[t.name].preflight.get("python") or [""])[0].strip()]
    results = remote.run_all(tomcats, lambda h: shell.multicast_probe(
        inv.delta.multicast_address, inv.delta.multicast_port, h.address, h.name, len(tomcats) - 1)) if tomcats else {}
    out: dict[str, str | None] = {t.name: None for t in inv.tomcats}
    for name, r in results.items():
        out[name] = r.stdout if r.exit is not None else f"not run: {r.why()}"
    return out


def with_preflight_facts(remote, inv: Inventory, facts: dict[str, HostFacts]) -> dict[str, HostFacts]:
    """The facts with what only preflight reads (host name resolution, `java -version`, disk,
    listeners with their process, nginx's version, SELinux), in one round trip per host that
    lacks them: kept out of deploy's facts so that a deploy with nothing to change does not run
    a JVM on every Tomcat."""
    missing = [h for h in inv.hosts if not facts[h.name].preflight]
    if not missing:
        return facts
    results = remote.run_all(missing, shell.preflight_facts_script())
    require_ok(results, "reading what preflight checks")
    out = dict(facts)
    for name, r in results.items():
        out[name] = dataclasses.replace(facts[name], preflight=preflight_sections(split_sections(r.stdout)))
    return out


def multicast_in_use(inv: Inventory, facts: dict[str, HostFacts]) -> bool:
    """Every Tomcat of the inventory runs now in tcsession's cluster on the inventory's multicast
    group and port (the precondition for multicast_proven; judged from the facts alone)."""
    from tcsession.rollout import running_clusters

    running = {t.name for t in inv.tomcats
               if facts[t.name].tomcat is not None and facts[t.name].active.get(facts[t.name].tomcat.unit) == "active"}
    clusters = running_clusters(inv, facts, running)
    group = f"{inv.delta.multicast_address}:{inv.delta.multicast_port}"
    return len(inv.tomcats) > 1 and all(
        t.name in clusters and clusters[t.name]["membership"] == "multicast" and clusters[t.name]["multicast"] == group
        for t in inv.tomcats)


def judge_multicast_proven(inv: Inventory, logs: dict[str, str | None]) -> dict[str, Check] | None:
    """When every Tomcat's log since it started names every other Tomcat as a cluster member
    (membership heard over the inventory's multicast group: multicast_in_use), multicast works
    between every pair: the checks that say so, for the probe they replace. None: not proven (a
    log unread, a peer not seen), so the probe runs."""
    from tcsession.facts import parse_members

    out: dict[str, Check] = {}
    for t in inv.tomcats:
        log = logs.get(t.name)
        if log is None:
            return None
        seen = {m.rsplit(":", 1)[0] for m in parse_members(log)}
        if not {o.address for o in inv.tomcats if o is not t} <= seen:
            return None
        out[t.name] = ("multicast", True, f"{inv.delta.multicast_address}:{inv.delta.multicast_port} proven by the "
                                          f"running cluster: {t.name} sees its {len(inv.tomcats) - 1} peer(s) "
                                          "as members (probe skipped)")
    return out


def multicast_proven(remote, inv: Inventory, facts: dict[str, HostFacts]) -> dict[str, Check] | None:
    """The probe's checks from the running cluster itself (one short log read per Tomcat instead
    of the probe's listen-and-send round, about 1.4 s), or None when it has not proven it."""
    if not multicast_in_use(inv, facts):
        return None
    results = remote.run_all(list(inv.tomcats), shell.membership_script())
    logs = {n: ("\n".join(split_sections(r.stdout).get("cluster-log", [])) if r.ok else None)
            for n, r in results.items()}
    return judge_multicast_proven(inv, logs)


def run_checks(remote, inv: Inventory, mode: Mode, facts: dict[str, HostFacts],
               installs: dict[str, tuple[str, ...]], trust_running: bool = False) -> PreflightReport:
    """Every check. `trust_running` (a deploy's own preflight): a running multicast cluster whose
    members see each other has proven multicast, and is not probed again; `inv preflight` always
    probes."""
    from tcsession.rollout import resolve_membership

    inv = resolve_membership(inv, facts)[0]
    facts = with_preflight_facts(remote, inv, facts)
    clocks = judge_clocks(measure_clocks(remote, inv.hosts))
    mcast: dict[str, Check] = {}
    if mode.cluster and uses_multicast(inv.delta.membership):
        # a running cluster whose members see each other has proven multicast: no probe again
        mcast = (trust_running and multicast_proven(remote, inv, facts)) or judge_multicast(
            probe_multicast(remote, inv, facts), [t.name for t in inv.tomcats],
            inv.delta.multicast_address, inv.delta.multicast_port)
    hosts = []
    for h in inv.hosts:
        extra = [clocks[h.name]] + ([mcast[h.name]] if h.name in mcast else [])
        hosts.append(judge_host(inv, h, facts[h.name], mode, bool(installs.get(h.name)), extra))
    return PreflightReport(mode.name, tuple(hosts))


def preflight(inv: Inventory, mode: Mode | str, busy=None) -> PreflightReport:
    """`inv preflight`, in a session of its own (`busy`: as tcsession.status.cluster_report's)."""
    import contextlib

    from tcsession.session import open_session

    with open_session(inv, quiet=True) as session, (busy or contextlib.nullcontext)():
        return run_preflight(session, mode)


def run_preflight(session, mode: Mode | str) -> PreflightReport:
    """The facts, the clocks and the multicast probe; nothing is changed."""
    from tcsession.plan import packages_to_install

    inv, remote = session.inv, session.remote
    mode = mode_named(mode)
    facts = gather(remote, list(inv.hosts))
    installs = {}
    for h in inv.hosts:
        try:
            installs[h.name] = packages_to_install(h, facts[h.name], mode)
        except TcsessionError:
            installs[h.name] = ("tomcat",)
    return run_checks(remote, inv, mode, facts, installs)


def refusal(report: PreflightReport, preflight_command: str = "tcsession preflight") -> str:
    """A deploy refused by preflight: its first problem, and the command that shows them all
    (with the inventory given: tcsession.workdir.command)."""
    first = report.problems
    more = f" (and {len(first) - 1} more: `{preflight_command}` shows them all)" if len(first) > 1 else ""
    return f"preflight: {first[0]}{more}; nothing was changed"
