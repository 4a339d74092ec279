"""`inv history` and `inv rollback`: every deploy's record on each host, and undoing it.

A rollback is a Plan of the same step types as a deploy, built by pure code (`plan_rollback`)
from the manifests, the saved bytes and the files as they are now, and applied by the same
interpreter: files restored byte for byte (all hosts at once), then each service back to its
state before the deploy (memcached before its Tomcat, nginx, the Tomcats one at a time, drained).
`--dry-run` prints exactly that plan.
"""

from __future__ import annotations

import dataclasses
import time

from tcsession import apps as applications
from tcsession import firewall, lab, msm, nginx, serverxml, state
from tcsession import plan as planning
from tcsession.apply import Interpreter
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, HostFacts, gather, parse_files, require_ok, split_sections
from tcsession.inventory import Inventory
from tcsession.modes import DELTA, NONE, Mode
from tcsession.remote import Remote
from tcsession.shell import files_script, history_script
from tcsession.state import Record
from tcsession.steps import (ApplyFirewall, ApplyNginx, FileChange, Plan, RestartMemcached, RestoreFiles, StopService, sha256)
from tcsession.ui import Progress


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
    restores, conflicts = {}, []
    for h, r in records.items():
        changes, conf = restore_changes(r, current[h])
        restores[h] = RestoreFiles(h, "put back as it was before the deploy", r.id, changes, conf, r.created_dirs)
        conflicts += [f"{h}:{p}" for p in conf]
    if conflicts and not force:
        raise TcsessionError(f"rollback of {deploy_id} refused: changed since that deploy: "
                             f"{', '.join(conflicts)}; keep your edits, or use --force (the edited "
                             "files are kept in the deploy's state directory)")
    steps: list = [restores[h.name] for h in inv.hosts if h.name in restores]
    after = {h: {c.path: c.after for c in s.changes} for h, s in restores.items()}

    def content(host: str, path: str) -> bytes | None:
        return after[host][path] if host in after and path in after[host] else facts[host].content(path)

    # nginx: back to how it was before the deploy
    n = inv.nginx.name
    site = content(n, nginx.SITE)
    nginx_stays = True
    if n in records:
        if records[n].manifest.was_active("nginx"):
            steps.append(ApplyNginx(n, "reload with the restored site", planning.config_digest({nginx.SITE: site}),
                                    start=facts[n].active.get("nginx") != "active"))
        else:
            nginx_stays = False
            steps.append(StopService(n, f"it was {records[n].manifest.service_before('nginx') or 'absent'} before "
                                        f"{deploy_id}", "nginx"))
    restart: dict[str, planning.HostChanges] = {}
    test_page: dict[str, bool] = {}
    running = {t.name for t in inv.tomcats if facts[t.name].tomcat
               and facts[t.name].active.get(facts[t.name].tomcat.unit) == "active"}
    tomcat_steps: dict[str, list] = {}
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
        if r.manifest.was_active(layout.unit):
            digest = planning.config_digest({p: content(t.name, p) for p in planning.tomcat_config_paths(layout)})
            restart[t.name] = planning.HostChanges(t, (), layout.unit, digest, "restart with the restored files")
            test_page[t.name] = content(t.name, layout.test_page) is not None
        else:
            own.append(StopService(t.name, f"it was {r.manifest.service_before(layout.unit) or 'absent'} before "
                                           f"{deploy_id}", layout.unit))
        tomcat_steps[t.name] = own
    restarts = planning.tomcat_restarts(inv, restored_mode(inv, facts, content), restart, running,
                                        site if nginx_stays else None, test_page,
                                        planning.cluster_members_now(inv, facts, running))
    # The files a running Tomcat watches (applications, web.xml, context descriptors) go back inside
    # each node's drained restart (stopped, in its wave), never on every running node at once:
    # Tomcat's autoDeploy would redeploy them everywhere together.
    for i, r in enumerate(restarts):
        layout = facts[r.host].tomcat
        app_changes = tuple(c for c in restores[r.host].changes if applications.watched_by_tomcat(layout, c.path))
        if not app_changes:
            continue
        idx = steps.index(restores[r.host])
        steps[idx] = restores[r.host] = dataclasses.replace(
            restores[r.host], changes=tuple(c for c in restores[r.host].changes if c not in app_changes))
        contexts = tuple("/" + c.path.rsplit("/", 1)[1][:-4].replace("#", "/") for c in app_changes
                         if c.path.endswith(".war") and c.after is not None)
        restarts[i] = dataclasses.replace(r, files=app_changes, app_contexts=contexts,
                                          clear=tuple(applications.derived_dirs(layout, app_changes)))
    # The hosts that do not restart first (their stops), then wave by wave: the wave's own steps
    # (memcached before its Tomcat, one host at a time), then the wave's restarts together.
    restarting = {s.host for s in restarts}
    for t in inv.tomcats:
        if t.name not in restarting:
            steps += tomcat_steps.get(t.name, [])
    for i, s in enumerate(restarts):
        if i == 0 or restarts[i - 1].wave != s.wave:
            wave = [r for r in restarts[i:] if r.wave == s.wave]
            for r in wave:
                steps += tomcat_steps.get(r.host, [])
            steps += wave
    return Plan(f"rollback {deploy_id}", tuple(steps))


def restored_mode(inv: Inventory, facts: dict[str, HostFacts], content) -> Mode:
    """The mode the Tomcats run once the files are restored (what their restart then waits for)."""
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
    return NONE


def simulate(current: dict[str, dict[str, FileFact]], facts: dict[str, HostFacts], the_plan: Plan):
    """The files and services as they will be once `the_plan` (a rollback) ran: for planning the
    next rollback of a --to chain in a dry run."""
    import dataclasses

    current = {h: dict(files) for h, files in current.items()}
    facts = dict(facts)
    for s in the_plan.steps:
        f = facts[s.host]
        if isinstance(s, RestoreFiles):
            for c in s.changes:
                fact = FileFact(c.path, c.after, c.mode, c.owner, c.after_link)
                current[s.host][c.path] = fact
                facts[s.host] = f = dataclasses.replace(f, files={**f.files, c.path: fact})
        elif isinstance(s, StopService):
            facts[s.host] = dataclasses.replace(f, active={**f.active, s.unit: "inactive"})
    return current, facts


# --------------------------------------------------------------------------- reading the hosts


def read_history(remote: Remote, inv: Inventory) -> tuple[dict[str, list[Record]], list[str]]:
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


def history_with_notes(inv: Inventory) -> tuple[dict[str, list[Record]], list[str]]:
    inv = with_removed(inv)
    lab.check_up(inv)
    with Remote(inv) as remote:
        return read_history(remote, inv)


def _targets(hist: dict[str, list[Record]], to: str | None) -> list[str]:
    """Deploy ids to undo, newest first: the latest applied one, or every applied one after `to`."""
    applied = sorted({r.id for recs in hist.values() for r in recs if not r.rolled_back})
    if not applied:
        raise TcsessionError("nothing to roll back: no applied deploy recorded on any host "
                             "(see `inv history`)")
    if to is None:
        return [applied[-1]]
    known = {r.id for recs in hist.values() for r in recs}
    if to not in known:
        raise TcsessionError(f"--to {to}: no such deploy on any host; `inv history` lists them")
    return [i for i in reversed(applied) if i > to]


def _read_current(remote: Remote, inv: Inventory, records: dict[str, Record]) -> dict[str, dict[str, FileFact]]:
    paths = {h: [e.path for e in r.files] + [f"{state.deploy_dir(r.id)}/{e.saved}" for e in r.files if e.saved]
             for h, r in records.items()}
    results = remote.run_all([inv.host(h) for h in records], lambda h: files_script(paths[h.name]))
    require_ok(results, "reading files to restore")
    return {h: parse_files(split_sections(results[h].stdout)) for h in records}


def rollback(inv: Inventory, to: str | None = None, force: bool = False, quiet: bool = False,
             dry_run: bool = False, plans: list | None = None) -> list[str]:
    """Undo the latest deploy (or every deploy after `to`) on every host; returns the ids undone
    (with dry_run: the ids that would be). `plans`, if given, receives each Plan (the dry run's
    or the executed one) and the steps executed, as (plan, executed) pairs."""
    progress = Progress(quiet)
    done = []
    inv = with_removed(inv)
    lab.check_up(inv)
    with Remote(inv) as remote:
        hist, _ = read_history(remote, inv)
        targets = _targets(hist, to)
        if not targets:
            progress.say(f"already at {to}: nothing to roll back", "green")
        sim = None
        for deploy_id in targets:
            started = time.monotonic()
            records = {h: r for h, recs in hist.items() for r in recs if r.id == deploy_id and not r.rolled_back}
            if sim is None:
                current = _read_current(remote, inv, records)
                facts = gather(remote, list(inv.hosts))
            else:  # a dry run of a chain: the state the previous rollbacks would leave
                current, facts = sim
                missing = {h: r for h, r in records.items() if h not in current or any(
                    e.path not in current[h] for e in r.files)}
                if missing:
                    extra = _read_current(remote, inv, missing)
                    for h, files in extra.items():
                        current[h] = {**files, **current.get(h, {})}
            the_plan = plan_rollback(inv, records, current, facts, force)
            if dry_run:
                progress.plan(the_plan, diffs=True)
                if plans is not None:
                    plans.append((the_plan, []))
                sim = simulate(current, facts, the_plan)
                done.append(deploy_id)
                continue
            interp = Interpreter(remote, {h.name: h for h in inv.hosts}, progress.event)
            outcome = interp.apply(the_plan, [h.name for h in inv.hosts])
            if plans is not None:
                plans.append((the_plan, list(outcome.done)))
            if not outcome.ok:
                raise TcsessionError(f"{outcome.error} -- rollback of {deploy_id} stopped; hosts: "
                                     f"{outcome.summary()}; fix the cause and run `inv rollback` again")
            progress.say(f"rolled back {deploy_id} in {time.monotonic() - started:.1f} s", "green")
            done.append(deploy_id)
            hist, _ = read_history(remote, inv)
    return done
