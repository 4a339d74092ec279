"""`inv deploy`: facts -> plan (pure, every host) -> the interpreter applies it -> report.

The dry run prints the plan and stops; the run prints the same plan's steps as they complete.
A fresh host's files come from its packages, so a plan that installs ends with a `Replan` step:
the packages go on (recorded first, so a stop leaves a record), the facts are read again, and the
rest is planned and applied the same way.
"""

from __future__ import annotations

import dataclasses
import time

from tcsession import apps as applications
from tcsession import clusterkey, maven, msmjars, preflight, tls
from tcsession import plan as planning
from tcsession.apply import Interpreter, Outcome
from tcsession.errors import UsageError, Interrupted, TcsessionError
from tcsession.facts import HostFacts, gather, gather_reachable
from tcsession.inventory import Host, Inventory
from tcsession.modes import Mode, mode_named
from tcsession.session import Session, open_session
from tcsession.steps import Plan
from tcsession.view import recap
from tcsession.workdir import command


@dataclasses.dataclass
class DeployReport:
    deploy_id: str | None
    plan: Plan | None  # the last plan applied (or previewed)
    changed: bool
    seconds: float = 0.0
    commands: int = 0
    executed: list = dataclasses.field(default_factory=list)  # the steps run, in order
    installed: dict = dataclasses.field(default_factory=dict)  # host -> the packages this deploy installed
    previewed: list = dataclasses.field(default_factory=list)  # the steps the plans showed
    mode: str = ""
    switch: str | None = None  # the switch's first line when the deploy changes the mode
    dry_run: bool = False


def prepare_msm_jars(inv: Inventory, facts: dict[str, HostFacts], installs: dict, progress: Progress,
                     have: dict | None = None) -> dict[str, tuple]:
    """Host name -> the MSM jars for its Tomcat major, for every Tomcat host whose major is known
    (installed, or named by the package about to be installed). Control machine only."""
    out = dict(have or {})
    by_major: dict[int, tuple] = {}
    for t in inv.tomcats:
        if t.name in out:
            continue
        major = planning.predicted_major(t, facts[t.name], installs.get(t.name, ()))
        if major is None:
            continue
        if major not in by_major:
            started = time.monotonic()
            read_from, note = maven.lock_to_read(inv.path)
            jars, warnings = msmjars.prepare_jars(inv.msm, major, maven.lock_path_for(inv.path), inventory=inv.path,
                                                  read_from=read_from)
            warnings = (note, *warnings) if note else warnings
            by_major[major] = jars
            converted = sum(j.converted for j in jars)
            progress.line("control", f"msm jars for Tomcat {major}: {len(jars)} verified"
                          + (f", {converted} converted to jakarta" if converted else ""), time.monotonic() - started)
            for w in warnings:
                progress.say(f"  warning: {w}", "yellow")
        out[t.name] = by_major[major]
    return out


def prepare_wars(inv: Inventory, facts: dict[str, HostFacts], installs: dict, mode: Mode, progress: Progress,
                 have: dict | None = None) -> dict[str, tuple]:
    """Host name -> its applications' WARs for its Tomcat major (checked, converted where asked),
    for every Tomcat host whose major is known. Control machine only: a refusal changes nothing."""
    if not inv.apps:
        return dict(have or {})
    majors = {}
    for t in inv.tomcats:
        if t.name not in (have or {}):
            major = planning.predicted_major(t, facts[t.name], installs.get(t.name, ()))
            if major is not None:
                majors[t.name] = major
    started = time.monotonic()
    out = dict(have or {})
    out.update(applications.prepare_apps(inv.apps, mode.name, majors))
    for w in {w.app.name: w for wars in out.values() for w in wars}.values():
        progress.line("control", f"app {w.app.name} ({w.app.context}): {w.app.war.name} checked, sha256 "
                      f"{w.sha256[:12]}, {len(w.data)} bytes" + (", converted to jakarta" if w.converted else ""),
                      time.monotonic() - started)
    return out


def _installs(inv: Inventory, facts: dict[str, HostFacts], mode: Mode) -> dict[str, tuple[str, ...]]:
    return {h.name: planning.packages_to_install(h, facts[h.name], mode) for h in inv.hosts}


def deploy(inv: Inventory, mode: str | Mode, dry_run: bool = False, quiet: bool = False,
           on_event=None, switch: bool = False, ui=None, switch_membership: bool = False) -> DeployReport:
    """`inv deploy`: in a session of its own (tcsession.session.open_session)."""
    with open_session(inv, quiet, ui) as session:
        return run_deploy(session, mode, dry_run, on_event, switch, switch_membership)


def run_deploy(session: Session, mode: str | Mode, dry_run: bool = False, on_event=None,
               switch: bool = False, switch_membership: bool = False) -> DeployReport:
    """A deploy in `mode`. When the Tomcats run the other mode, the deploy is a switch: with
    [cluster] mode in the inventory it needs `switch` (--switch-mode), and its first line says
    what it removes (tcsession.modes.check_running). A running cluster switched to the other kind
    of membership needs `switch_membership` (--switch-membership: tcsession.rollout.membership_switch)."""
    inv, remote, progress = session.inv, session.remote, session.ui
    mode = mode_named(mode)
    started = session.clock()
    deploy_id = session.new_id()
    stamp = session.stamp()
    t = session.clock()
    with progress.waiting(f"reading {len(inv.hosts)} hosts"):
        facts = gather(remote, list(inv.hosts), inv.apps)
    progress.line("all", f"facts from {len(inv.hosts)} hosts", session.clock() - t)
    for h in inv.hosts:
        if facts[h.name].package_manager is None:
            raise TcsessionError(f"{h.name}: no apt-get, dnf or yum found; tcsession supports "
                                 "Debian/Ubuntu (apt) and the RHEL family (yum/dnf)")
    from tcsession.modes import check_running
    from tcsession.rollout import PASS_WRITES, membership_passes, membership_switch, resolve_membership
    from tcsession.status import detect_mode

    switching = check_running(inv, mode, detect_mode(inv, facts), switch)
    inv, membership_note = resolve_membership(inv, facts)
    switching_membership = membership_switch(inv, facts) if mode.cluster else None
    if switching_membership and not switch_membership:
        from tcsession.rollout import switch_refusal

        raise UsageError(switch_refusal(inv, facts, switching_membership, membership_note))
    # a switch of membership kind: one rolling pass per step of the chain (rollout.membership_passes),
    # the first planned here with everything else the inventory changes, the others once it is done
    passes = membership_passes(inv, facts) if switching_membership else [inv.delta.membership]
    target = inv
    if len(passes) > 1:
        inv = _with_membership(target, passes[0])
    report_switch = switching
    if switching:
        progress.say(switching, "bold yellow")
    for a in mode.advice(inv):
        progress.say(f"  advice: {a}", "yellow")
    if mode.memcached and inv.delta.encrypt:
        progress.say(f"  note: {inv.path}: [delta] encrypt = true applies to delta mode only; msm mode sends "
                     "sessions to memcached unencrypted (keep memcached on a private network)", "yellow")
    if inv.removed:  # remove = true: stopped once nginx no longer sends to them (if reachable)
        gone, notes = gather_reachable(remote, list(inv.removed), inv.apps)
        facts.update(gone)
        for n in notes:
            progress.say(f"  note: {n}", "yellow")
    before = {h.name: dict(facts[h.name].active) for h in inv.hosts + inv.removed if h.name in facts}
    installs = _installs(inv, facts, mode)
    # msm: the jars, resolved and checked on this machine before any host is changed
    jars = prepare_msm_jars(inv, facts, installs, progress) if mode.memcached else {}
    key = ""
    if mode.cluster and inv.delta.encrypt:  # a dry run writes no key file: a new key stands in (masked in diffs)
        key = clusterkey.key_for(inv.delta.key_file, create=not dry_run) or clusterkey.DRY_RUN_KEY

    wars = prepare_wars(inv, facts, installs, mode, progress)  # the applications, likewise
    tls_files = tls.read_pair(inv) if inv.tls else None  # [tls]: read and checked here, before any change
    the_plan = planning.plan(inv, facts, mode, jars, deploy_id, stamp, before, wars=wars, key=key, tls_files=tls_files)
    for c in planning.session_comparisons(inv, facts, wars):  # (a refusal was raised by the plan)
        progress.line("control", c.summary())
    # preflight: what breaks clusters most, before any change (a failure changes nothing);
    # a deploy with nothing to change changes nothing, and skips its network probes
    if dry_run or not the_plan.empty:
        t = session.clock()
        with progress.waiting("preflight: names, clocks, multicast, ports, Java"):
            # (a switch's: the target's checks; its multicast probe when it ends on multicast)
            checked = preflight.run_checks(remote, target, mode, facts, installs, trust_running=True)
        if not checked.ok:
            raise TcsessionError(preflight.refusal(checked, command(inv.path, f'preflight --mode={mode.name}')))
        progress.line("all", f"preflight: {sum(len(h.checks) for h in checked.hosts)} checks passed",
                      session.clock() - t)
        if any(what == "multicast" and "probe skipped" in detail for h in checked.hosts for what, _, detail in h.checks):
            progress.line("all", "preflight: multicast proven by the running cluster (every Tomcat sees its peers "
                                 "as members): its probe skipped")
    if membership_note and mode.cluster and not the_plan.empty:
        progress.line("all", membership_note)
    if switching_membership and not the_plan.empty:
        progress.say(switching_membership, "bold yellow")
    report = DeployReport(None, the_plan, not the_plan.empty, previewed=list(the_plan.steps), mode=mode.name,
                          switch=report_switch, dry_run=dry_run)
    if dry_run:
        progress.say("dry run: the steps a deploy would take, with their diffs; nothing is changed", "bold")
        progress.plan(the_plan, diffs=True, hosts=[h.name for h in inv.hosts])
        if the_plan.empty:
            progress.say("no changes", "green")
        if len(passes) > 1:
            progress.say(f"the steps above are membership pass 1/{len(passes)} ({passes[0]}); then "
                         + "; ".join(f"pass {i}/{len(passes)} ({k}) writes each Tomcat's Cluster with "
                                     f"{PASS_WRITES.get(k, k)} and restarts it again, drained and state-gated"
                                     for i, k in enumerate(passes[1:], 2)), "bold")
        progress.dry_run(list(the_plan.steps))
        report.seconds, report.commands = session.clock() - started, remote.commands
        return report
    if the_plan.empty:
        progress.plan(the_plan, diffs=False, hosts=[h.name for h in inv.hosts])
        progress.say("no changes", "green")
        report.seconds, report.commands = session.clock() - started, remote.commands
        return report
    report.deploy_id = deploy_id

    def on(e):
        progress.event(e)
        if on_event:
            on_event(e)

    interp = Interpreter(remote, {h.name: h for h in inv.hosts + inv.removed}, on, session.clock)
    names = [h.name for h in inv.hosts + inv.removed if h.name in facts]
    if len(passes) > 1:
        progress.say(f"membership pass 1/{len(passes)}: {passes[0]}: {PASS_WRITES.get(passes[0], passes[0])}", "bold")
    outcome = interp.apply(the_plan, names)
    seconds = dict(outcome.seconds)
    report.executed += outcome.done
    if outcome.ok and outcome.stopped_at is not None:  # packages installed: plan the files now
        report.executed.append(outcome.stopped_at)
        installed = {s.host: s.packages for s in outcome.done}
        report.installed = installed
        facts.update(gather(remote, [inv.host(n) for n in installed], inv.apps))
        if mode.memcached:  # a Tomcat whose major was known only once installed
            jars = prepare_msm_jars(inv, facts, {}, progress, have=jars)
        wars = prepare_wars(inv, facts, {}, mode, progress, have=wars)
        try:
            the_plan = planning.plan(inv, facts, mode, jars, deploy_id, stamp, before, installed, wars, key=key,
                                     tls_files=tls_files)
        except TcsessionError as e:
            raise TcsessionError(f"{e} -- deploy {deploy_id} stopped after installing packages "
                                 f"({', '.join(sorted(installed))}), before writing any file; fix it and "
                                 f"deploy again (the install is recorded; `{command(inv.path, 'rollback')}` stops what it started)") from None
        report.plan = the_plan
        report.previewed += the_plan.steps
        progress.say("planned now that the packages are installed:")
        progress.plan(the_plan, diffs=False, hosts=[h.name for h in inv.hosts])
        outcome = interp.apply(the_plan, names)
        for h, t in outcome.seconds.items():
            seconds[h] = seconds.get(h, 0.0) + t
        report.executed += outcome.done
        if outcome.ok and outcome.stopped_at is not None:  # still packages to install: the install did not
            missing = ", ".join(f"{s.host}: {' '.join(s.packages)}" for s in the_plan.steps if hasattr(s, "packages"))
            raise TcsessionError(f"deploy {deploy_id} stopped: the package manager reported success but the packages "
                                 f"are still missing ({missing}); install them by hand to see why, then deploy again "
                                 f"(`{command(inv.path, 'rollback')}` undoes what was done)")
    progress.recap(recap(names, report.previewed, report.executed, outcome.hosts, seconds))
    if not outcome.ok:
        raise stopped("deploy", outcome, deploy_id, report.executed, _advice(target, outcome, report.executed, mode.name),
                      progress)
    for number, kind in enumerate(passes[1:], 2):
        # the next pass: the hosts read again, planned on the next kind (the target's last), applied
        # as a deploy of its own (its own id: `rollback` undoes the last pass, one step back the chain)
        inv = target if number == len(passes) else _with_membership(target, kind)
        progress.say(f"membership pass {number}/{len(passes)}: {kind}: {PASS_WRITES.get(kind, kind)}", "bold")
        facts = gather(remote, list(inv.hosts), inv.apps)
        if inv.removed:
            facts.update(gather_reachable(remote, list(inv.removed), inv.apps)[0])
        deploy_id = session.new_id()
        before = {h.name: dict(facts[h.name].active) for h in inv.hosts + inv.removed if h.name in facts}
        pass_plan = planning.plan(inv, facts, mode, jars, deploy_id, session.stamp(), before, wars=wars, key=key,
                                  tls_files=tls_files)
        report.deploy_id, report.plan = deploy_id, pass_plan
        report.previewed += pass_plan.steps
        names = [h.name for h in inv.hosts + inv.removed if h.name in facts]
        outcome = interp.apply(pass_plan, names)
        report.executed += outcome.done
        seconds = dict(outcome.seconds)
        progress.recap(recap(names, list(pass_plan.steps), outcome.done, outcome.hosts, seconds))
        if not outcome.ok:
            raise stopped("deploy", outcome, deploy_id, outcome.done,
                          _advice(target, outcome, outcome.done, mode.name)
                          + f" (membership pass {number}/{len(passes)}: the Tomcats run {kind} or the pass before; "
                          "both see each other, and the deploy again continues the switch)", progress)
    report.seconds, report.commands = session.clock() - started, remote.commands
    progress.say(f"deployed {mode.name} ({deploy_id}) in {report.seconds:.1f} s", "green")
    return report


def _with_membership(inv: Inventory, kind: str) -> Inventory:
    """The inventory as one pass of a membership switch writes it (rollout.membership_passes)."""
    return dataclasses.replace(inv, delta=dataclasses.replace(inv.delta, membership=kind))


def _advice(inv: Inventory, outcome: Outcome, executed: list, mode: str = "") -> str:
    """What to do after a deploy stopped: the commands with the inventory given, and the mode
    when the inventory does not say it (`--mode` was given)."""
    changed = any(not s.check_only for s in executed) or (outcome.failed is not None
                                                          and not outcome.failed.check_only)
    again = "deploy" + (f" --mode={mode}" if mode and inv.mode != mode else "")
    return (f"run the deploy again to converge (`{command(inv.path, again)}`), or "
            f"`{command(inv.path, 'rollback')}` to undo it" if changed else "nothing was changed")


def stopped(what: str, outcome: Outcome, run_id: str, executed: list, advice: str, progress) -> TcsessionError:
    """The error a stopped deploy or rollback ends with. Its message (for --json and --quiet) says it
    all: the failure, its log lines one per line, where each host stands, what to do. When the
    progress shown already said the failure and the recap (`progress.shows`, `progress.showed_failure`),
    the operator is told only what to do (`brief`): the failure is shown once. An interrupt, or a
    failure no step reported (nginx could not put a node back), is said in that last line."""
    head, _, logs = (outcome.error or "stopped").partition("\n")
    message = "\n".join([f"{what} {run_id} stopped: {head}", *([logs] if logs else []),
                         "hosts: " + "; ".join(f"{h}: {'failed' if st.startswith('failed') else st}"
                                               for h, st in outcome.hosts.items()), advice])
    e = (Interrupted if outcome.interrupted else TcsessionError)(message).at(run_id, outcome.hosts)
    if getattr(progress, "shows", False):  # the recap was shown; the failure too if a step failed
        said = getattr(progress, "showed_failure", False) and not outcome.interrupted
        e.brief = f"{what} {run_id} stopped" + ("" if said else f": {head}") + f"; {advice}"
    return e
