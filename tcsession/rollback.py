"""`inv history` and `inv rollback`: every deploy's record on each host, and undoing it.

A rollback is a Plan of the same step types as a deploy, built by pure code (`plan_rollback`)
from the manifests, the saved bytes and the files as they are now, and applied by the same
interpreter: files restored byte for byte (all hosts at once), then each service back to its
state before the deploy (memcached before its Tomcat, nginx, the Tomcats one at a time, drained).
`--dry-run` prints exactly that plan.
"""

from __future__ import annotations

import dataclasses

from tcsession import apps as applications
from tcsession import firewall, msm, nginx, rollout, serverxml, state
from tcsession import plan as planning
from tcsession.apply import Interpreter
from tcsession.errors import Interrupted, TcsessionError
from tcsession.session import Session, open_session
from tcsession.facts import FileFact, HostFacts, gather, parse_files, require_ok, split_sections
from tcsession.inventory import Inventory
from tcsession.modes import DELTA, MSM, NONE, Mode
from tcsession.shell import files_script, history_script
from tcsession.state import Record
from tcsession.view import recap
from tcsession.workdir import command
from tcsession.steps import (ApplyFirewall, ApplyNginx, FileChange, Plan, RestartMemcached, RestoreFiles, StopService, sha256)


# --------------------------------------------------------------------------- planning (pure)


def restore_changes(record: Record, current: dict[str, FileFact]) -> tuple[tuple[FileChange, ...], tuple[str, ...]]:
    """What undoing `record` means for this host's files as they are now: the changes, and the
    files someone changed after the deploy (conflicts). `current` holds the files and the saved
    copies (deploys/<id>/files/<n>)."""
    changes, conflicts = [], []
    ddir = state.deploy_dir(record.id)
    for entry in record.files:
        path = entry.path
        now = current.get(path, FileFact(path, None))
        if (now.link is None and not entry.before_link and sha256(now.content) == entry.before_sha256
                and entry.before_sha256 != entry.after_sha256):
            continue  # never written (the deploy stopped before it, e.g. a rollout's later node): as before
        if now.link is None and sha256(now.content) != entry.after_sha256:
            conflicts.append(path)
        if entry.before_link:
            changes.append(FileChange(path, now.content, None, "", "", now.mode, now.owner, after_link=entry.before_link))
        elif entry.existed:
            old = current.get(f"{ddir}/{entry.saved}") if entry.saved else None
            if old is None or old.content is None:
                raise TcsessionError(f"{record.host}: saved copy of {path} for deploy {record.id} is "
                                     f"missing from {ddir}; cannot restore it")
            if sha256(old.content) != entry.before_sha256:
                raise TcsessionError(f"{record.host}: saved copy of {path} in {ddir} does not match its "
                                     "checksum in the manifest; refusing to restore it")
            changes.append(FileChange(path, now.content, old.content, entry.before_mode, entry.before_owner,
                                      now.mode, now.owner))
        else:
            changes.append(FileChange(path, now.content, None, "", "", now.mode, now.owner))
    return tuple(changes), tuple(conflicts)


def plan_rollback(inv: Inventory, records: dict[str, Record], current: dict[str, dict[str, FileFact]],
                  facts: dict[str, HostFacts], force: bool = False) -> Plan:
    """The rollback of one deploy on every host that recorded it, as a Plan."""
    deploy_id = next(iter(records.values())).id
    inv = rollout.resolve_membership(inv, facts)[0]
    restores, conflicts = {}, []
    for h, r in records.items():
        changes, conf = restore_changes(r, current[h])
        restores[h] = RestoreFiles(h, "put back as it was before the deploy", r.id, changes, conf, r.created_dirs)
        conflicts += [f"{h}:{p}" for p in conf]
    if conflicts and not force:
        raise TcsessionError(f"rollback of {deploy_id} refused: changed since that deploy: "
                             f"{', '.join(conflicts)}; keep your edits, or use --force (the edited "
                             "files are kept in the deploy's state directory)")
    after = {h: {c.path: c.after for c in s.changes} for h, s in restores.items()}

    def content(host: str, path: str) -> bytes | None:
        return after[host][path] if host in after and path in after[host] else facts[host].content(path)

    # nginx: back to how it was before the deploy
    n = inv.nginx.name
    site = content(n, nginx.SITE)
    nginx_steps: list = []
    if n in records:
        if records[n].manifest.was_active("nginx"):
            nginx_steps.append(ApplyNginx(n, "reload with the restored site", planning.config_digest(
                {p: content(n, p) for p in planning.nginx_config(facts[n].package_manager)}),
                                          start=facts[n].active.get("nginx") != "active",
                                          drain_timeout=inv.rolling.drain_timeout))
        else:
            nginx_steps.append(StopService(n, f"it was {records[n].manifest.service_before('nginx') or 'absent'} "
                                              f"before {deploy_id}", "nginx"))
            site = None  # nginx stops: it sends to nobody, so no restart is drained
    restart: dict[str, planning.HostChanges] = {}
    test_page: dict[str, bool] = {}
    services: dict[str, list] = {}
    for t in inv.tomcats:
        r, layout = records.get(t.name), facts[t.name].tomcat
        if r is None or layout is None:
            continue
        own: list = []
        conf_path = msm.memcached_conf_path(facts[t.name].package_manager)
        if any(c.path == conf_path for c in restores[t.name].changes):  # memcached before its Tomcat
            if r.manifest.was_active("memcached"):
                own.append(RestartMemcached(t.name, "restart with the restored configuration",
                                            planning.config_digest({conf_path: content(t.name, conf_path)}), enable=False))
            else:
                own.append(StopService(t.name, f"it was not running before {deploy_id}", "memcached"))
        if any(c.path == firewall.RULES for c in restores[t.name].changes):
            rules = content(t.name, firewall.RULES)
            own.append(ApplyFirewall(t.name, "load the restored rules" if rules is not None else
                                     f"there were no tcsession rules before {deploy_id}", remove=rules is None))
        # The files a running Tomcat watches (applications, web.xml, context descriptors) go back inside
        # the node's drained restart (stopped, in its wave), never on every running node at once:
        # Tomcat's autoDeploy would redeploy them everywhere together.
        watched = tuple(c for c in restores[t.name].changes if applications.watched_by_tomcat(layout, c.path))
        if r.manifest.was_active(layout.unit):
            digest = planning.config_digest({p: content(t.name, p) for p in planning.tomcat_config_paths(layout)})
            contexts = tuple("/" + c.path.rsplit("/", 1)[1][:-4].replace("#", "/") for c in watched
                             if c.path.endswith(".war") and c.after is not None)
            restart[t.name] = planning.HostChanges(t, (), layout.unit, digest, "restart with the restored files",
                                                   layout=layout, deferred=watched, app_contexts=contexts)
            test_page[t.name] = content(t.name, layout.test_page) is not None
            if watched:
                restores[t.name] = dataclasses.replace(
                    restores[t.name], changes=tuple(c for c in restores[t.name].changes if c not in watched))
        else:
            own.append(StopService(t.name, f"it was {r.manifest.service_before(layout.unit) or 'absent'} before "
                                           f"{deploy_id}", layout.unit))
        services[t.name] = own
    files = [restores[h.name] for h in inv.hosts if h.name in restores]
    return rollout.rollout(inv, restored_mode(inv, facts, content), f"rollback {deploy_id}", facts, files, services,
                           nginx_steps, [], restart, site, test_page, (), rollout.ROLLBACK)


def restored_mode(inv: Inventory, facts: dict[str, HostFacts], content) -> Mode:
    """The mode the Tomcats run once the files are restored (what their restart then waits for,
    and what the checks after the rollback expect): tcsession's Cluster in a server.xml is delta,
    memcached-session-manager's Manager in a context is msm, neither is none."""
    for t in inv.tomcats:
        layout = facts[t.name].tomcat
        data = content(t.name, layout.server_xml) if layout else None
        if data:
            try:
                cluster = serverxml.read_cluster(data, f"{t.name}:{layout.server_xml}")
            except TcsessionError:
                continue
            if cluster and cluster["managed"]:
                return DELTA
    for t in inv.tomcats:
        layout = facts[t.name].tomcat
        for path in (layout.app_context, layout.context_xml) if layout else ():
            if msm.MANAGER_CLASS.encode() in (content(t.name, path) or b""):
                return MSM
    return NONE


# --------------------------------------------------------------------------- reading the hosts


def read_history(remote, inv: Inventory) -> tuple[dict[str, list[Record]], list[str]]:
    results = remote.run_all(inv.hosts, history_script())
    require_ok(results, "reading the deploy history")
    hist, notes = {}, []
    for name, r in results.items():
        hist[name], n = state.parse_history(r.stdout, name)
        notes += n
    return hist, notes


def history(inv: Inventory) -> dict[str, list[Record]]:
    return history_with_notes(inv)[0]


def with_removed(inv: Inventory) -> Inventory:
    """The inventory with its `remove = true` Tomcats among the hosts: history and rollback read
    and undo them too (rolling back the deploy that removed one starts it again)."""
    return dataclasses.replace(inv, hosts=inv.hosts + inv.removed, removed=()) if inv.removed else inv


def history_with_notes(inv: Inventory, busy=None) -> tuple[dict[str, list[Record]], list[str]]:
    """`inv history`, in a session of its own (`busy`: as tcsession.status.cluster_report's)."""
    import contextlib

    inv = with_removed(inv)
    with open_session(inv, quiet=True) as session, (busy or contextlib.nullcontext)():
        return read_history(session.remote, inv)


def _targets(hist: dict[str, list[Record]], to: str | None, inv_path=None) -> list[str]:
    """Deploy ids to undo, newest first: the latest applied one, or every applied one after `to`."""
    applied = sorted({r.id for recs in hist.values() for r in recs if not r.rolled_back})
    if not applied:
        raise TcsessionError("nothing to roll back: no applied deploy recorded on any host "
                             f"(see `{command(inv_path, 'history')}`)")
    if to is None:
        return [applied[-1]]
    known = {r.id for recs in hist.values() for r in recs}
    if to not in known:
        raise TcsessionError(f"--to {to}: no such deploy on any host; `{command(inv_path, 'history')}` lists them")
    return [i for i in reversed(applied) if i > to]


def _read_current(remote, inv: Inventory, records: dict[str, Record]) -> dict[str, dict[str, FileFact]]:
    paths = {h: [e.path for e in r.files] + [f"{state.deploy_dir(r.id)}/{e.saved}" for e in r.files if e.saved]
             for h, r in records.items()}
    results = remote.run_all([inv.host(h) for h in records], lambda h: files_script(paths[h.name]))
    require_ok(results, "reading files to restore")
    return {h: parse_files(split_sections(results[h].stdout)) for h in records}


def rollback(inv: Inventory, to: str | None = None, force: bool = False, quiet: bool = False,
             dry_run: bool = False, plans: list | None = None, ui=None) -> list[str]:
    """`inv rollback`, in a session of its own (tcsession.session.open_session)."""
    inv = with_removed(inv)
    with open_session(inv, quiet, ui) as session:
        return run_rollback(session, to, force, dry_run, plans)


def run_rollback(session: Session, to: str | None = None, force: bool = False, dry_run: bool = False,
                 plans: list | None = None) -> list[str]:
    """Undo the latest deploy (or every deploy after `to`) on every host; returns the ids undone
    (with dry_run: the ids that would be). `plans`, if given, receives each Plan (the dry run's
    or the executed one) and the steps executed, as (plan, executed) pairs.

    A dry run of several deploys shows the first rollback's plan in full, exactly as it will run;
    each later one is planned from the hosts as the previous rollback leaves them, so it is listed
    (its hosts and files, from the records) as planned once the previous one ran."""
    inv, remote, progress = session.inv, session.remote, session.ui
    done: list[str] = []
    hist, _ = read_history(remote, inv)
    targets = _targets(hist, to, inv.path)
    if not targets:
        progress.say(f"already at {to}: nothing to roll back", "green")
    for deploy_id in targets:
        started = session.clock()
        records = {h: r for h, recs in hist.items() for r in recs if r.id == deploy_id and not r.rolled_back}
        if dry_run and done:
            files = sum(len(r.files) for r in records.values())
            progress.say(f"then undo {deploy_id}: planned once the previous rollback ran (hosts "
                         f"{', '.join(sorted(records))}; {files} recorded file(s))", "yellow")
            done.append(deploy_id)
            continue
        if any(r.manifest.kind == "upgrade" for r in records.values()):  # packages back to their recorded versions
            from tcsession import upgrade

            facts = gather(remote, list(inv.hosts), inv.apps)
            the_plan = upgrade.plan_rollback(inv, facts, upgrade.read_packages(remote, inv, facts), records,
                                             session.new_id(), session.stamp())
        else:
            current = _read_current(remote, inv, records)
            facts = gather(remote, list(inv.hosts))
            the_plan = plan_rollback(inv, records, current, facts, force)
        if dry_run:
            progress.say(f"dry run: the steps undoing {deploy_id} would take, with their diffs; nothing is changed",
                         "bold")
            progress.plan(the_plan, diffs=True)
            progress.dry_run(list(the_plan.steps))
            if plans is not None:
                plans.append((the_plan, []))
            done.append(deploy_id)
            continue
        interp = Interpreter(remote, {h.name: h for h in inv.hosts}, progress.event, session.clock)
        names = [h.name for h in inv.hosts]
        outcome = interp.apply(the_plan, names)
        if plans is not None:
            plans.append((the_plan, list(outcome.done)))
        progress.recap(recap(names, list(the_plan.steps), outcome.done, outcome.hosts, outcome.seconds))
        if not outcome.ok:
            from tcsession.deploy import stopped

            raise stopped("rollback of", outcome, deploy_id, outcome.done,
                          f"fix the cause and run `{command(inv.path, 'rollback')}` again", progress)
        progress.say(f"rolled back {deploy_id} in {session.clock() - started:.1f} s", "green")
        done.append(deploy_id)
        hist, _ = read_history(remote, inv)
    return done
