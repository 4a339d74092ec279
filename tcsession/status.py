"""`inv status` and `inv lab.status`: what each host is and whether the cluster works.

One parallel round trip reads everything from the hosts (facts, files, listening ports, the
Tomcat log's membership lines); pure code judges it; then one session goes through nginx as the
blog's client would, and its counter must rise by one at every request.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json as jsonlib
import re

from tcsession import apps as applications
from tcsession import msm, msmjars, nginx, serverxml, shell, tls, unattended
from tcsession.client import SessionRun, check_path, check_session, parse_session_id, tls_context
from tcsession.errors import TcsessionError
from tcsession.facts import HostFacts, complete, end_marked, incomplete, parse_facts, parse_members, status_script
from tcsession.inventory import Host, Inventory
from tcsession.maven import lock_to_read
from tcsession.modes import DELTA, MSM, NONE, Mode, mode_named, port_listening
from tcsession.plan import msm_family_jars
from tcsession.probes import is_wildcard, parse_memcached_probe, reachable_on
from tcsession.session import Session, open_session
from tcsession.steps import sha256
from tcsession.tomcat import Layout
from tcsession.workdir import command


@dataclasses.dataclass(frozen=True)
class HostStatus:
    name: str
    role: str
    address: str
    reachable: bool
    error: str | None = None
    facts: HostFacts | None = None
    checks: tuple[tuple[str, bool, str], ...] = ()  # (what, ok, detail)
    members: tuple[str, ...] = ()
    # msm: the memcached nodes its Manager names, as read from its context.xml: (id, address:port),
    # and the ids of its failover nodes (used only when the others are down)
    memcached_nodes: tuple[tuple[str, str], ...] = ()
    failover_nodes: tuple[str, ...] = ()
    notes: tuple[tuple[str, str], ...] = ()  # (what, detail): worth acting on, not a failure (updates, restarts owed)

    @property
    def problems(self) -> list[str]:
        if not self.reachable:
            return [self.error or "unreachable"]
        out = []
        if self.facts.system_state != "running":
            failed = ", ".join(self.facts.failed_units) or "no failed unit listed"
            out.append(f"systemd {self.facts.system_state} ({failed})")
        out += [f"{what}: {detail}" for what, ok, detail in self.checks if not ok]
        return out

    def to_dict(self) -> dict:
        d = {"name": self.name, "role": self.role, "address": self.address,
             "reachable": self.reachable, "healthy": not self.problems, "problems": self.problems}
        if self.facts:
            f = self.facts
            d.update(os=f.os_pretty, system_state=f.system_state, failed_units=list(f.failed_units),
                     package_manager=f.package_manager, packages=f.packages,
                     active={k: v for k, v in f.active.items() if k in f.packages},
                     listening=sorted({f"{l.proto}/{l.address}:{l.port}" for l in f.listeners}),
                     checks=[{"check": w, "ok": ok, "detail": det} for w, ok, det in self.checks])
            if self.role == "tomcat":
                d["cluster_members"] = list(self.members)
            if f.upgrades is not None:
                d["updates"] = [{"package": p.name, "installed": p.installed, "candidate": p.candidate,
                                 "security": p.security} for p in f.upgrades.packages.values() if p.pending]
            d["notes"] = [{"note": w, "detail": det} for w, det in self.notes]
        return d


@dataclasses.dataclass(frozen=True)
class Report:
    hosts: tuple[HostStatus, ...]
    mode: str | None = None  # "delta" / "msm" when the Tomcats carry that mode's configuration, else None
    session: SessionRun | None = None
    commands: int = 0  # SSH commands issued
    # msm: each memcached node after the session check: (node id, address:port, items or None
    # when unreachable), and the node holding the check's session (from its id)
    memcached: tuple[tuple[str, str, int | None], ...] = ()
    session_node: str | None = None
    advice: tuple[str, ...] = ()  # recommendations at this size (tcsession.modes.Mode.advice)
    session_note: str | None = None  # why the session check did not run (no test page)
    expected_mode: str | None = None  # the inventory's [cluster] mode (None: not set)
    inventory: str | None = None  # the inventory file read (suggested commands name it)

    @property
    def msm_problems(self) -> list[str]:
        """msm mode: the check's session must live on a memcached node that holds items."""
        if self.mode != "msm" or self.session is None or not self.session.ok or not self.memcached:
            return []
        nodes = {n: items for n, _, items in self.memcached}
        if self.session_node not in nodes:
            return [f"session check: the session id {self.session.session_ids[-1]} names no memcached node "
                    f"({', '.join(nodes)}): memcached-session-manager is not keeping it"]
        if not nodes[self.session_node]:
            return [f"session check: memcached node {self.session_node} holds no items after the check"]
        return []

    # each application: (context, ((node, WAR sha256 or None, HTTP status), ...)) in inventory order
    apps: tuple[tuple[str, tuple[tuple[str, str | None, str], ...]], ...] = ()

    @property
    def app_problems(self) -> list[str]:
        """Nodes that serve different versions (WAR checksums) of one application."""
        out = []
        for ctx, nodes in self.apps:
            shas = {sha for _, sha, _ in nodes}
            if len(shas) > 1:
                out.append(f"application {ctx}: the nodes serve different versions: " + ", ".join(
                    f"{n} {sha[:12] if sha else 'none'}" for n, sha, _ in nodes))
        return out

    @property
    def mode_problems(self) -> list[str]:
        """The Tomcats run another mode than the inventory's [cluster] mode (or none yet)."""
        if self.expected_mode is None or self.mode == self.expected_mode:
            return []
        if any(not h.reachable for h in self.hosts if h.role == "tomcat"):
            return []  # what they run is not known: the unreachable hosts are the problem said
        return [f"mode: the Tomcats run {self.mode + ' mode' if self.mode else 'neither mode'}, the inventory's "
                f'[cluster] mode is "{self.expected_mode}"; deploy it ({command(self.inventory, "deploy")})']

    @property
    def healthy(self) -> bool:
        return (all(not h.problems for h in self.hosts) and (self.session is None or self.session.ok)
                and not self.msm_problems and not self.app_problems and not self.mode_problems)

    def to_dict(self) -> dict:
        d = {"healthy": self.healthy, "mode": self.mode, "hosts": [h.to_dict() for h in self.hosts]}
        if self.expected_mode is not None:
            d["inventory_mode"] = self.expected_mode
            d["mode_problems"] = self.mode_problems
        if self.apps:
            d["applications"] = [{"context": ctx, "nodes": [{"node": n, "war_sha256": sha, "http": code}
                                                            for n, sha, code in nodes]} for ctx, nodes in self.apps]
            d["application_problems"] = self.app_problems
        if self.session is not None:
            d["session_check"] = self.session.to_dict() | {"ok": self.session.ok}
        if self.advice:
            d["advice"] = list(self.advice)
        if self.session is None and self.session_note:
            d["session_check"] = {"skipped": self.session_note}
        if self.memcached:
            d["memcached_nodes"] = [{"node": n, "address": a, "items": i} for n, a, i in self.memcached]
            d["session_check"]["memcached_node"] = self.session_node
            d["problems"] = self.msm_problems
        return d


# --------------------------------------------------------------------------- judging (pure)


def _mode(mode: Mode | str | None) -> Mode:
    if isinstance(mode, Mode):
        return mode
    return {"delta": DELTA, "msm": MSM}.get(mode or "", NONE)


def _loopback(member: str) -> bool:
    try:
        return ipaddress.ip_address(member.rsplit(":", 1)[0]).is_loopback
    except ValueError:
        return False


def judge_packages(inv: Inventory, host: Host, f: HostFacts) -> tuple[tuple[str, str], ...]:
    """The cluster's packages that have updates (security ones marked) and the services that run
    older code than is installed (a restart owed): `upgrade` does both, drained."""
    hp = f.upgrades
    if hp is None:
        return ()
    out = []
    pending = [p for p in sorted(hp.packages.values(), key=lambda p: p.name) if p.pending]
    if pending:
        security = sum(p.security for p in pending)
        out.append(("updates", ", ".join(f"{p.name} {p.installed} -> {p.candidate}" + (" (security)" if p.security else "")
                                         for p in pending)
                    + (f"; {security} security update(s)" if security else "") + f"; {command(inv.path, 'upgrade')}"
                    + " rolls them through the cluster"))
    units = {"nginx": "nginx"} if host.role == "nginx" else {
        **({"tomcat": f.tomcat.unit} if f.tomcat else {}), "memcached": "memcached"}
    for key, unit in units.items():
        why = hp.restart_owed(unit, key)
        if why:
            out.append(("restart owed", f"{unit} runs older code than is installed: {why}; "
                                        f"{command(inv.path, 'upgrade')} restarts it drained"))
    return tuple(out)


def judge_tomcat(inv: Inventory, host: Host, f: HostFacts, mode: Mode | str | None) -> HostStatus:
    mode = _mode(mode)
    checks = []
    layout = f.tomcat
    members: tuple[str, ...] = ()
    if layout is None:
        checks.append(("tomcat package", False, f"no Tomcat installed; run {command(inv.path, 'deploy')}"))
        return HostStatus(host.name, host.role, host.address, True, facts=f, checks=tuple(checks))
    active = f.active.get(layout.unit)
    checks.append((f"{layout.unit} active", active == "active", active or "unknown"))
    ports = [e for e in mode.expected_ports(inv) if e.host == host.name]
    for e in ports:
        ok = port_listening(e, f.listeners)
        checks.append((f"{e.proto} {e.address}:{e.port}", ok, "listening" if ok else "not listening"))
    checks += judge_wildcards(inv, host, f.listeners)
    if mode.cluster:
        server = f.files.get(layout.server_xml)
        cluster = (serverxml.read_cluster(server.content, f"{host.name}:{layout.server_xml}")
                   if server and server.content else None)
        ok = bool(cluster and cluster["managed"] and cluster["jvm_route"] == host.jvm_route
                  and cluster["receiver_address"] == host.address)
        checks.append(("delta cluster in server.xml", ok,
                       f"{cluster['manager'].rsplit('.', 1)[-1]}, {cluster['membership']}"
                       + (" bridge (a membership switch not finished: deploy again with --switch-membership)"
                          if cluster.get("bridge") else "") + ", "
                       f"jvmRoute {cluster['jvm_route']}" if cluster else "no Cluster"))
        decrypt = judge_decrypt(f.cluster_log)
        if decrypt:
            checks.append(("cluster encryption", False,
                           f"{len(decrypt)} message(s) it could not decrypt (a node with another key, or Tomcats on "
                           f"both sides of the replay-protection change): {decrypt[-1].strip()[:200]}"))
        members = parse_members(f.cluster_log)
        expected = {f"{t.address}:{inv.delta.receiver_port}" for t in inv.tomcats if t.name != host.name}
        loop = [m for m in members if _loopback(m)]
        if loop:
            checks.append(("cluster members", False, f"a node advertises a loopback address: {', '.join(loop)}"))
        elif active == "active":
            missing = sorted(expected - set(members))
            checks.append(("cluster members", not missing,
                           f"sees {len(set(members) & expected)} of {len(expected)} peers"
                           + (f"; missing {', '.join(missing)}" if missing else "")))
    nodes: tuple = ()
    failover: tuple = ()
    if mode.memcached:
        checks += judge_msm(inv, host, f, layout, active == "active")
        nodes, failover = manager_nodes(inv, f, layout)
    for a, sha, code in app_versions(inv, f):
        ok = sha is not None and code not in ("000", "404") and not code.startswith("5")
        checks.append((f"app {a.context}", ok, (f"{a.base_name}.war sha256 {sha[:12]}" if sha else
                                                f"no {a.base_name}.war; run {command(inv.path, 'deploy')}") + f", HTTP {code}"
                       + ("" if ok or sha is None else " (the context is not running)")))
    if (automatic := unattended.check(host, f, inv.automatic)) is not None:  # a warning at most
        checks.append(automatic)
    return HostStatus(host.name, host.role, host.address, True, facts=f, checks=tuple(checks),
                      members=members, memcached_nodes=nodes, failover_nodes=failover, notes=judge_packages(inv, host, f))


def manager_nodes(inv: Inventory, f: HostFacts, layout: Layout) -> tuple[tuple, tuple]:
    """The memcached nodes and failover nodes of the MSM Manager this Tomcat runs with (its
    context.xml as read), or ((), ()) without one."""
    path = layout.app_context if inv.msm.scope == "app" else layout.context_xml
    fact = f.files.get(path)
    try:
        manager = msm.read_manager(fact.content, path) if fact and fact.content else None
    except TcsessionError:
        manager = None
    if not manager:
        return (), ()
    nodes = tuple((n.split(":", 1)[0], n.split(":", 1)[1]) for n in
                  re.split(r"[\s,]+", manager.get("memcachedNodes", "").strip()) if ":" in n)
    return nodes, tuple(manager.get("failoverNodes", "").split())


def app_versions(inv: Inventory, f: HostFacts) -> list[tuple]:
    """(app, deployed WAR sha256 or None, HTTP status on the node) for each application."""
    layout = f.tomcat
    if layout is None:
        return []
    out = []
    for a in inv.apps:
        war = f.files.get(applications.war_path(layout, a))
        out.append((a, sha256(war.content) if war and war.content is not None else None,
                    f.app_http.get(a.context, "000")))
    return out


def judge_decrypt(log: str) -> list[str]:
    """Decrypt failures logged since the membership last changed (older ones were healed by a
    node restarting with the right key)."""
    lines = log.splitlines()
    last_added = max((i for i, l in enumerate(lines) if "member added" in l.lower()), default=-1)
    # the pattern lines only, in log order (the `SEVERE `-prefixed error section that follows
    # them repeats the same lines out of order)
    failed = [l for l in lines[last_added + 1:] if "Failed to decrypt" in l and not l.startswith("SEVERE ")]
    # One or two replay detections are what a node's rejoin costs (measured in the lab: one, right
    # after the member came back, with replication working); more mean a replay or clock skew.
    replays = [l for l in failed if "replay" in l]
    return failed if len(failed) > len(replays) or len(replays) > REPLAYS_ALLOWED else []


REPLAYS_ALLOWED = 2


def judge_wildcards(inv: Inventory, host: Host, listeners) -> list[tuple[str, bool, str]]:
    """One check: no cluster port (HTTP, receiver, memcached) of this Tomcat listens on a wildcard
    address (clients could reach it around nginx, or anyone on the network join the cluster)."""
    ports = {host.http_port: "HTTP", inv.delta.receiver_port: "cluster receiver",
             inv.msm.memcached_port: "memcached"}
    wild = sorted({(l.port, l.address) for l in listeners
                   if l.proto == "tcp" and l.port in ports and is_wildcard(l.address)})
    if not wild:
        return [("cluster ports on own address", True, "none on a wildcard address")]
    shown = ", ".join(f"{ports[p]} {a}:{p}" for p, a in wild)
    return [("cluster ports on own address", False,
             f"listening on a wildcard address: {shown}; run {command(inv.path, 'deploy')} to bind them to {host.address}")]


# memcached-session-manager's start, as the real tc7/tc8/tc9 managers log it: their service is
# an anonymous subclass, so no class name precedes " starts initialization..." (older builds
# and other log formats put "MemcachedSessionService" there; both are recognised).
MSM_STARTS = re.compile(r"starts initialization\.\.\. \(configured nodes definition")
MSM_FINISHED = re.compile(r"finished initialization:?\s*$", re.M)
# A failed start: an error from the Manager (Debian's journal carries the level as priority:
# shell.membership_script prefixes those lines with "SEVERE ").
MSM_SEVERE = re.compile(r"^.*SEVERE.*(javakaffee|[Mm]emcached|[Ss]ession manager|Manager\[).*$", re.M)
_NODE_IDS = re.compile(r"^- (failover )?node ids: (\[.*\])\s*$", re.M)


def judge_msm_start(log: str) -> tuple[bool, str]:
    """Did memcached-session-manager start in the running Tomcat (its log since it started)?"""
    severe = [m.group(0).strip() for m in MSM_SEVERE.finditer(log)]
    if severe:
        cause = next((l for l in reversed(severe) if "Caused by" in l and l != severe[0]), None)
        return False, "failed to start: " + severe[0] + (f" ({cause})" if cause else "")
    if MSM_FINISHED.search(log):
        ids = {bool(m.group(1)): m.group(2) for m in _NODE_IDS.finditer(log)}
        return True, ("finished initialization" + (f": node ids {ids[False]}" if False in ids else "")
                      + (f", failover node ids {ids[True]}" if True in ids else ""))
    if MSM_STARTS.search(log):
        return False, "started initialization but never finished it (see the Tomcat log)"
    detail = "no MSM initialization line (\"starts initialization... (configured nodes definition\") since Tomcat started"
    if "tcsession-standin" in log:
        detail += " (a test stand-in Manager is loaded, not memcached-session-manager)"
    return False, detail


def judge_msm(inv: Inventory, host: Host, f: HostFacts, layout: Layout, running: bool) -> list:
    """memcached beside the Tomcat (its own address only), the Manager, the jars against the lock
    file, every memcached reachable from this Tomcat, and MSM's initialization line."""
    checks = []
    port = inv.msm.memcached_port
    if host.memcached:
        checks.append(("memcached active", f.active.get("memcached") == "active", f.active.get("memcached", "absent")))
        others = sorted({l.address for l in f.listeners if l.proto == "tcp" and l.port == port
                         and (is_wildcard(l.address) or l.address not in (host.address, "127.0.0.1", "::1"))})
        checks.append((f"memcached only on {host.address}", not others,
                       "yes" if not others else f"also on {', '.join(others)}: an open cache; set its listen address"))
    path = layout.app_context if inv.msm.scope == "app" else layout.context_xml
    fact = f.files.get(path)
    manager = msm.read_manager(fact.content, f"{host.name}:{path}") if fact and fact.content else None
    want = msm.manager_spec(inv.tomcats.index(host), inv.tomcats, inv.msm, str(inv.path))
    ok = bool(manager and manager["managed"] and manager.get("memcachedNodes") == want.memcached_nodes_value
              and manager.get("failoverNodes", "") == " ".join(want.failover_nodes))
    checks.append(("msm Manager", ok, f"in {path}: memcachedNodes {manager.get('memcachedNodes')}, failoverNodes "
                   f"{manager.get('failoverNodes') or 'none'}, sticky {manager.get('sticky')}" if manager
                   else f"no MemcachedBackupSessionManager in {path}"))
    lock = lock_to_read(inv.path)[0]
    expected, why = msmjars.expected_digests(inv.msm, layout.major, lock)
    if expected is None:
        checks.append(("msm jars", False, f"cannot check them: {why}"))
    else:
        have = {p.rsplit("/", 1)[1]: sha256(x.content) for p, x in msm_family_jars(layout, f.files).items()}
        bad = [n for n, sha in expected.items() if have.get(n) != sha]
        extra = sorted(set(have) - set(expected))
        checks.append(("msm jars", not bad and not extra,
                       f"{len(expected)} in {layout.lib} match {lock.name}" if not bad and not extra else
                       "; ".join(([f"missing or different: {', '.join(bad)}"] if bad else [])
                                 + ([f"not expected: {', '.join(extra)}"] if extra else []))))
    nodes = [f"{t.address}:{port}" for t in inv.tomcats if t.memcached]
    unreachable = [n for n in nodes if "version" not in f.memcached.get(n, {})]
    if manager:  # (a Tomcat without MSM's Manager does not ask the nodes: facts.status_script)
        checks.append(("memcached reachable", not unreachable,
                       ", ".join(f"{n} {f.memcached[n].get('curr_items', '?')} items" for n in nodes
                                 if n not in unreachable)
                       + (f"; unreachable: {', '.join(unreachable)}" if unreachable else "")))
    if running:
        checks.append(("msm initialized", *judge_msm_start(f.cluster_log)))
    return checks


def judge_nginx(inv: Inventory, host: Host, f: HostFacts, mode: Mode | str | None = None) -> HostStatus:
    checks = []
    if "nginx" not in f.packages:
        checks.append(("nginx package", False, f"not installed; run {command(inv.path, 'deploy')}"))
    else:
        checks.append(("nginx active", f.active.get("nginx") == "active", f.active.get("nginx", "unknown")))
        ok = reachable_on(f.listeners, host.address, host.http_port)
        checks.append((f"tcp {host.address}:{host.http_port}", ok, "listening" if ok else "not listening"))
        site = f.files.get(nginx.SITE)
        checks.append(("tcsession site", bool(site and site.content), "present" if site and site.content
                       else f"{nginx.SITE} missing"))
        if inv.tls:
            ok = reachable_on(f.listeners, host.address, inv.tls.https_port)
            checks.append((f"tcp {host.address}:{inv.tls.https_port} (https)", ok, "listening" if ok else "not listening"))
            checks.append(judge_certificate(f.content(nginx.TLS_CERT), deploy=command(inv.path, "deploy")))
    if (automatic := unattended.check(host, f, inv.automatic)) is not None:  # a warning at most
        checks.append(automatic)
    return HostStatus(host.name, host.role, host.address, True, facts=f, checks=tuple(checks),
                      notes=judge_packages(inv, host, f))


def judge_certificate(pem: bytes | None, now=None, deploy: str = "tcsession deploy") -> tuple[str, bool, str]:
    """The certificate nginx serves: its days left (a warning under tls.WARN_DAYS, a failure when
    expired or missing)."""
    if not pem:
        return ("certificate", False, f"{nginx.TLS_CERT} missing; run {deploy}")
    try:
        days = tls.days_left(pem, now)
    except TcsessionError:
        return ("certificate", False, f"{nginx.TLS_CERT} is not a PEM certificate; run {deploy}")
    if days < 0:
        return ("certificate", False, f"expired {-days} day(s) ago; renew it and run {deploy}")
    if days < tls.WARN_DAYS:
        return ("certificate", True, f"{days} days left: renew it soon (under {tls.WARN_DAYS})")
    return ("certificate", True, f"{days} days left")


def detect_mode(inv: Inventory, facts: dict[str, HostFacts]) -> str | None:
    for t in inv.tomcats:
        f = facts.get(t.name)
        layout = f.tomcat if f else None
        for path in (layout.app_context, layout.context_xml) if layout else ():
            ctx = f.files.get(path)
            try:
                manager = msm.read_manager(ctx.content, f"{t.name}:{path}") if ctx and ctx.content else None
            except TcsessionError:
                manager = None
            if manager and manager["managed"]:
                return "msm"
        server = f.files.get(layout.server_xml) if layout else None
        if server and server.content:
            try:
                cluster = serverxml.read_cluster(server.content, f"{t.name}:{layout.server_xml}")
            except TcsessionError:
                continue
            if cluster and cluster["managed"]:
                return "delta"
    return None


# --------------------------------------------------------------------------- gathering


def _gather(session: Session, script_for) -> tuple[dict[str, HostStatus | HostFacts], int]:
    """Facts by host (or a HostStatus for a host that was not reached or sent what cannot be
    read), and the SSH commands issued."""
    inv, remote = session.inv, session.remote
    results = remote.run_all(inv.hosts, script_for)
    out: dict = {}
    for h in inv.hosts:
        r = results[h.name]
        if r.exit is None:
            out[h.name] = HostStatus(h.name, h.role, h.address, False, r.why())
            continue
        if not complete(r.stdout):
            out[h.name] = HostStatus(h.name, h.role, h.address, False, incomplete(h.name))
            continue
        try:
            out[h.name] = parse_facts(r.stdout, h.name)
        except TcsessionError as e:
            out[h.name] = HostStatus(h.name, h.role, h.address, False, str(e))
    return out, remote.commands


def host_report(inv: Inventory) -> Report:
    """The lab view: reachable, OS, systemd state, packages."""
    with open_session(inv, quiet=True) as session:
        gathered, commands = _gather(session, end_marked(shell.facts_script()))
    return Report(tuple(g if isinstance(g, HostStatus) else
                        HostStatus(h.name, h.role, h.address, True, facts=g)
                        for h, g in ((h, gathered[h.name]) for h in inv.hosts)), commands=commands)


SKIPPED = ("skipped: [app] test_page = false (no test page to follow a session with); set [app] check_path "
           "to request a page of yours through nginx")


def cluster_report(inv: Inventory, session_requests: int = 10, busy=None) -> Report:
    """`inv status`, in a session of its own (one set of connections for everything it reads).
    `busy`: a context manager factory entered once the session is open (any prompt answered),
    around the reading (the command's spinner: tcsession.ui.waiting)."""
    import contextlib

    with open_session(inv, quiet=True) as world, (busy or contextlib.nullcontext)():
        return run_status(world, session_requests)


def run_status(world: Session, session_requests: int = 10) -> Report:
    """The full view: every host judged, then one session through nginx. (`world`: the command's
    tcsession.session.Session; `session` below is the HTTP session checked.)"""
    inv = world.inv
    nodes = tuple((t.address, inv.msm.memcached_port) for t in inv.tomcats if t.memcached)
    gathered, commands = _gather(world, lambda h: status_script(nodes, inv.apps, h.address, h.http_port)
                                 if h.role == "tomcat" else status_script(()))
    facts = {n: g for n, g in gathered.items() if isinstance(g, HostFacts)}
    from tcsession.rollout import resolve_membership

    inv = resolve_membership(inv, facts)[0]
    mode = detect_mode(inv, facts)
    hosts = []
    for h in inv.hosts:
        g = gathered[h.name]
        if isinstance(g, HostStatus):
            hosts.append(g)
        elif h.role == "nginx":
            hosts.append(judge_nginx(inv, h, g, mode))
        else:
            hosts.append(judge_tomcat(inv, h, g, mode))
    session, note = None, None
    if session_requests and isinstance(gathered[inv.nginx.name], HostFacts):
        # with [tls], as a browser would: HTTPS, the certificate verified for server_name
        port = inv.tls.https_port if inv.tls else inv.nginx.http_port
        name = inv.tls.server_name if inv.tls else None
        context = tls_context(str(inv.tls.ca) if inv.tls.ca else None) if inv.tls else None
        if inv.app.test_page:
            session = check_session(inv.nginx.address, port, session_requests, mode=mode, server_name=name,
                                    context=context)
            if inv.tls and session.cookie is not None:  # over HTTPS the session cookie must say so
                flags = {"secure": "Secure", "httponly": "HttpOnly"}
                missing = [v for k, v in flags.items() if k not in session.cookie_attributes]
                if missing:
                    session.problems.append(
                        f"the session cookie lacks {' and '.join(missing)} over HTTPS (Tomcat does not see the "
                        f"requests as secure: is its RemoteIpValve there? run {command(inv.path, 'deploy')})")
            same_site = inv.app.same_site
            if same_site not in ("", "unset") and session.cookie is not None \
                    and f"samesite={same_site}" not in session.cookie_attributes:
                session.problems.append(f"the session cookie lacks SameSite={same_site.capitalize()} ([app] same_site): "
                                        f"is tcsession's CookieProcessor in conf/context.xml? run "
                                        f"{command(inv.path, 'deploy')}")
        elif inv.app.check_path:
            session = check_path(inv.nginx.address, port, inv.app.check_path, session_requests, name, context)
        else:
            note = SKIPPED
    memcached, session_node = (), None
    if mode == "msm" and session is not None and session.session_ids and inv.app.test_page:
        memcached, more = memcached_after_check(world, facts)
        commands += more
        session_node = parse_session_id(session.session_ids[-1], "msm").node
    apps = tuple((a.context, tuple((t.name, sha, code) for t in inv.tomcats if t.name in facts
                                   for a2, sha, code in app_versions(inv, facts[t.name]) if a2 == a))
                 for a in inv.apps)
    advice = tuple(mode_named(mode).advice(inv)) if mode in ("delta", "msm") else ()
    return Report(tuple(hosts), mode, session, commands, memcached, session_node, advice=advice, apps=apps,
                  session_note=note, expected_mode=inv.mode, inventory=str(inv.path))


def memcached_after_check(world: Session, facts: dict[str, HostFacts]) -> tuple[tuple, int]:
    """Each memcached node's item count, read after the session check from one Tomcat host
    (over the session's connections: no second login, no second sudo prompt)."""
    inv = world.inv
    ids = {f"{a}:{p}": n for n, a, p in msm.manager_spec(0, inv.tomcats, inv.msm, str(inv.path)).memcached_nodes}
    probe_from = next((t for t in inv.tomcats if t.name in facts), None)
    if probe_from is None:
        return (), 0
    r = world.remote.run(probe_from, shell.memcached_probe_script(MSM.memcached_nodes(inv)))
    stats = parse_memcached_probe(r.stdout) if r.exit is not None else {}
    out = []
    for addr, node in ids.items():
        items = stats.get(addr, {}).get("curr_items")
        out.append((node, addr, int(items) if items and items.isdigit() else None))
    return tuple(out), 1
