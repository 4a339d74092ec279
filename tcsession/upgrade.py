"""`inv upgrade`: the month's security updates rolled through the cluster without logging anyone out.

facts + the cluster's packages on every host (shell.packages_script) -> per host what changes
(tcsession.packages: refused before any change when it is not a patch or not available) -> THE
rollout in its UPGRADE order (records, the Tomcats in drained waves with their packages installed
while each is stopped, memcached one host at a time, nginx last, the checks) -> the interpreter.
`inv rollback` of an upgrade is the same plan back to the recorded versions (`plan_upgrade`).
"""

from __future__ import annotations

import dataclasses

from tcsession import nginx as nginx_site
from tcsession import packages as P
from tcsession import plan as planning
from tcsession import preflight, rollout, shell
from tcsession.apply import Interpreter
from tcsession.errors import TcsessionError, UsageError
from tcsession.facts import HostFacts, gather, require_ok, split_sections
from tcsession.inventory import Inventory
from tcsession.modes import Mode
from tcsession.session import Session, open_session
from tcsession.state import Manifest
from tcsession.steps import Plan, RecordUpgrade, RestartTomcat, RestoreFiles, UpgradeService
from tcsession.view import recap
from tcsession.workdir import command

ALL_GROUPS = frozenset(P.GROUPS)


def units_of(facts: HostFacts, role: str) -> tuple[str, ...]:
    if role == "nginx":
        return ("nginx",)
    return ((facts.tomcat.unit,) if facts.tomcat else ()) + ("memcached",)


def read_packages(remote, inv: Inventory, facts: dict[str, HostFacts], pending: bool = False) -> dict[str, P.HostPackages]:
    """Every host's cluster packages (one round trip, all hosts at once)."""
    results = remote.run_all(list(inv.hosts), lambda h: shell.packages_script(P.PATTERN, units_of(facts[h.name], h.role),
                                                                                pending))
    require_ok(results, "reading the packages")
    return {n: P.parse_packages(split_sections(r.stdout)) for n, r in results.items()}


def parse_only(text: str | None) -> frozenset[str]:
    if not text:
        return ALL_GROUPS
    groups = frozenset(x.strip() for x in text.split(",") if x.strip())
    bad = sorted(groups - ALL_GROUPS)
    if bad:
        raise UsageError(f"--only {','.join(bad)}: not a group of the cluster's packages; use a comma-separated "
                             f"list of {', '.join(sorted(ALL_GROUPS))}")
    return groups


def plan_upgrade(inv: Inventory, mode: Mode, facts: dict[str, HostFacts], changes: dict[str, P.HostUpgrade],
                 run_id: str, stamp: str, kind: str = "upgrade", rolling_back: str | None = None) -> Plan:
    """The plan of an upgrade (or, `rolling_back` an upgrade's id, of its rollback): per host its
    record (an upgrade) or its mark (a rollback, once done), then THE rollout's UPGRADE order."""
    records, marks = [], []
    restart: dict[str, planning.HostChanges] = {}
    services: dict[str, list] = {}
    nginx_steps: list = []
    test_page: dict[str, bool] = {}
    tomcat_upgrades: dict[str, tuple] = {}
    also: dict[str, tuple] = {}
    verb = "upgrade" if rolling_back is None else "downgrade"
    for h in inv.hosts:
        hu = changes.get(h.name)
        f = facts[h.name]
        if hu is not None and rolling_back is not None:
            marks.append(RestoreFiles(h.name, f"the packages are back as before {rolling_back}", rolling_back, ()))
        if hu is None or hu.empty:
            continue
        if rolling_back is None:
            records.append(RecordUpgrade(h.name, "before any package changes", Manifest(
                run_id, mode.name, stamp, services_before=tuple(sorted(f.active.items())), kind="upgrade",
                packages_changed=hu.changes)))
        if h.role == "nginx":
            why = "last; its package restarts it: a brief restart, connections open then are closed"
            if "nginx" in hu.owed:
                why = f"restart owed: {hu.owed['nginx']}"
            nginx_steps.append(UpgradeService(h.name, why, "nginx", f.package_manager or "", hu.by_unit.get("nginx", ()),
                                              ("*", h.http_port), verb))
            continue
        # memcached restarts inside its host's drained Tomcat restart, one host at a time: the Tomcat
        # then starts with connections to the new memcached, and the other Tomcats, which find their
        # connection to it closed when they next use it, have every other node to fail over to (two
        # memcached restarted one after the other while a Tomcat still held closed connections to
        # both lost sessions in the lab: MSM found no node and gave them ids it stores nowhere)
        layout = f.tomcat
        if layout is not None and any(k in hu.by_unit or k in hu.owed for k in ("tomcat", "memcached")):
            digest = planning.config_digest({p: f.content(p) for p in planning.tomcat_config_paths(layout)})
            why = "; ".join(
                [f"its packages change ({', '.join(n for n, _, _ in hu.by_unit[k])})" for k in ("tomcat", "memcached")
                 if k in hu.by_unit] + [f"restart owed: {hu.owed[k]}" for k in ("tomcat", "memcached") if k in hu.owed])
            restart[h.name] = planning.HostChanges(h, (), layout.unit, digest, why, layout=layout)
            test_page[h.name] = f.content(layout.test_page) is not None
            tomcat_upgrades[h.name] = hu.by_unit.get("tomcat", ()) + hu.by_unit.get("memcached", ())
            if "memcached" in hu.by_unit or "memcached" in hu.owed:
                also[h.name] = (("memcached", _memcached_port(inv, h, facts)),)
    site = facts[inv.nginx.name].content(nginx_site.SITE) if inv.nginx.name in facts else None
    if also:  # memcached restarts: one host at a time
        inv = dataclasses.replace(inv, rolling=dataclasses.replace(inv.rolling, max_unavailable=1))
    plan = rollout.rollout(inv, mode, kind, facts, records, services, nginx_steps, [], restart, site, test_page, (),
                           rollout.UPGRADE)
    steps = [dataclasses.replace(s, upgrades=tomcat_upgrades[s.host], package_manager=facts[s.host].package_manager or "",
                                 verb=verb, also=also.get(s.host, ()))
             if isinstance(s, RestartTomcat) and s.host in tomcat_upgrades else s for s in plan.steps]
    return Plan(plan.kind, tuple(steps + marks))


def _memcached_port(inv: Inventory, host, facts) -> tuple[str, int] | None:
    listening = [l for l in facts[host.name].listeners if l.port == inv.msm.memcached_port]
    return (host.address, inv.msm.memcached_port) if any(l.address == host.address for l in listening) else None


def running_mode(inv: Inventory, facts: dict[str, HostFacts]) -> Mode:
    from tcsession.status import detect_mode
    from tcsession.modes import NONE, mode_named

    name = detect_mode(inv, facts)
    return mode_named(name) if name in ("delta", "msm") else NONE


def check_apt(inv: Inventory, facts: dict[str, HostFacts], changes: dict[str, P.HostUpgrade]) -> None:
    other = [f"{n} ({facts[n].package_manager or 'none'})" for n, hu in changes.items()
             if not hu.empty and facts[n].package_manager != "apt-get"]
    if other:
        raise TcsessionError(f"upgrade: rolls apt-get hosts (Debian, Ubuntu); not yet {', '.join(other)}: upgrade "
                             "those by hand, one host at a time; nothing was changed")


def upgrade(inv: Inventory, dry_run: bool = False, only: str | None = None, security: bool = False,
            to: str | None = None, quiet: bool = False, ui=None, plans: list | None = None):
    parse_only(only), P.parse_pins(to or "")  # a usage mistake stops here, before any connection
    with open_session(inv, quiet, ui) as session:
        return run_upgrade(session, dry_run, only, security, to, plans)


def run_upgrade(session: Session, dry_run: bool = False, only: str | None = None, security: bool = False,
                to: str | None = None, plans: list | None = None) -> str | None:
    """Upgrade the cluster's packages; returns the upgrade's id (None: nothing to do, or a dry run)."""
    inv, remote, progress = session.inv, session.remote, session.ui
    groups, pins = parse_only(only), P.parse_pins(to or "")
    started = session.clock()
    with progress.waiting(f"reading {len(inv.hosts)} hosts and their packages"):
        facts = gather(remote, list(inv.hosts), inv.apps)
        pkgs = read_packages(remote, inv, facts, pending=security)
    progress.line("all", f"facts and packages from {len(inv.hosts)} hosts", session.clock() - started)
    unknown = P.unknown_pins(pins, pkgs)
    if unknown:
        raise UsageError(f"--to {', '.join(unknown)}: not one of the cluster's packages on any host (they are: "
                             f"{', '.join(sorted({n for hp in pkgs.values() for n in hp.packages}))}); nothing was changed")
    changes = {}
    for h in inv.hosts:
        f = facts[h.name]
        changes[h.name] = P.host_upgrade(h.name, h.role, pkgs[h.name], groups, pins,
                                         f.tomcat.unit if f.tomcat else None, bool(h.role == "tomcat" and
                                                                                    "memcached" in f.packages),
                                         security)
    check_apt(inv, facts, changes)
    mode = running_mode(inv, facts)
    run_id, stamp = session.new_id(), session.stamp()
    the_plan = plan_upgrade(inv, mode, facts, changes, run_id, stamp)
    progress.upgrade_table(changes, pkgs)
    if not the_plan.empty:  # preflight: clocks (the log gate reads peers' logs by time), disk, ports ...
        t = session.clock()
        with progress.waiting("preflight"):
            checked = preflight.run_checks(remote, inv, mode, facts, {}, trust_running=True)
        if not checked.ok:
            raise TcsessionError(preflight.refusal(checked, command(inv.path, f"preflight --mode={mode.name}")))
        progress.line("all", f"preflight: {sum(len(h.checks) for h in checked.hosts)} checks passed", session.clock() - t)
    if plans is not None:
        plans.append(the_plan)
    if dry_run:
        progress.say("dry run: the steps an upgrade would take; nothing is changed", "bold")
        progress.plan(the_plan, diffs=False, hosts=[h.name for h in inv.hosts])
        if the_plan.empty:
            progress.say("nothing to upgrade", "green")
        progress.dry_run(list(the_plan.steps))
        return None
    if the_plan.empty:
        progress.say("nothing to upgrade", "green")
        return None
    progress.plan(the_plan, diffs=False, hosts=[h.name for h in inv.hosts])
    return apply_plan(session, the_plan, run_id, "upgrade", started)


def apply_plan(session: Session, the_plan: Plan, run_id: str, what: str, started: float) -> str:
    from tcsession.deploy import stopped

    inv, remote, progress = session.inv, session.remote, session.ui
    interp = Interpreter(remote, {h.name: h for h in inv.hosts}, progress.event, session.clock)
    names = [h.name for h in inv.hosts]
    outcome = interp.apply(the_plan, names)
    progress.recap(recap(names, list(the_plan.steps), outcome.done, outcome.hosts, outcome.seconds))
    if not outcome.ok:
        advice = (f"fix the cause, then `{command(inv.path, 'upgrade')}` again to converge, or "
                  f"`{command(inv.path, 'rollback')}` to put the recorded versions back" if what == "upgrade"
                  else f"fix the cause and run `{command(inv.path, 'rollback')}` again")
        raise stopped(what, outcome, run_id, outcome.done, advice, progress)
    progress.say(f"{'upgraded' if what == 'upgrade' else 'rolled back'} ({run_id}) in "
                 f"{session.clock() - started:.1f} s", "green")
    return run_id


def plan_rollback(inv: Inventory, facts: dict[str, HostFacts], pkgs: dict[str, P.HostPackages], records: dict,
                  run_id: str, stamp: str) -> Plan:
    """Undo an upgrade (records: host -> its state.Record): every package back to its recorded version."""
    upgrade_id = next(iter(records.values())).id
    changes = {}
    for h in inv.hosts:
        r = records.get(h.name)
        if r is None:
            continue
        f = facts[h.name]
        hu = P.rollback_upgrade(h.name, h.role, r.manifest.packages_changed, pkgs[h.name],
                                f.tomcat.unit if f.tomcat else None, "memcached" in f.packages)
        changes[h.name] = hu  # (empty: nothing to put back there, only marked)
    check_apt(inv, facts, changes)
    return plan_upgrade(inv, running_mode(inv, facts), facts, changes, run_id, stamp, f"rollback {upgrade_id}",
                        rolling_back=upgrade_id)
