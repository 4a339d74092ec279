"""`inv history` and `inv rollback`: every deploy's manifest on each host, and undoing it.

A rollback is a plan too: built by pure code from the manifest, the saved bytes and the files as
they are now, and run by the same executor pieces as a deploy (atomic writes, nginx -t, Tomcats
one at a time).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shlex
import time

from tcsession import plan as planning
from tcsession.deploy import (STATE_DIR, HostStates, Progress, _require_ok, gather, restart_memcached,
                              rolling_restart, show_plan, stamp_command)
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, files_script, parse_files, split_sections
from tcsession.inventory import Inventory
from tcsession.remote import Remote

DEPLOYS = f"{STATE_DIR}/deploys"

HISTORY_SCRIPT = f"""
for d in $(ls -1d {DEPLOYS}/*/ 2>/dev/null | sort); do
  id=$(basename "$d"); echo "@@deploy $id $([ -e "$d/rolled-back" ] && echo rolled-back || echo applied)"
  base64 -w0 "$d/manifest.json" 2>/dev/null; echo
  echo "@@dirs $id"; cat "$d/created-dirs" 2>/dev/null || true
done
"""


@dataclasses.dataclass(frozen=True)
class Record:
    """One deploy as one host recorded it."""

    id: str
    host: str
    mode: str
    time: str
    files: tuple[dict, ...]
    packages: tuple[str, ...]
    services_before: dict
    created_dirs: tuple[str, ...]
    rolled_back: bool


def parse_history(text: str, host: str) -> list[Record]:
    s = split_sections(text)
    out = []
    for header, body in s.items():
        if not header.startswith("deploy "):
            continue
        _, deploy_id, state = header.split()
        try:
            manifest = json.loads(base64.b64decode("".join(body)))
        except ValueError:
            continue  # a deploy that died before its manifest was complete has nothing to undo
        out.append(Record(deploy_id, host, manifest.get("mode", "?"), manifest.get("time", "?"),
                          tuple(manifest.get("files", ())), tuple(manifest.get("packages_installed", ())),
                          manifest.get("services_before", {}),
                          tuple(l for l in s.get(f"dirs {deploy_id}", []) if l.strip()),
                          state == "rolled-back"))
    return sorted(out, key=lambda r: r.id)


@dataclasses.dataclass(frozen=True)
class HostRollback:
    record: Record
    changes: tuple[planning.FileChange, ...]
    conflicts: tuple[str, ...]  # files changed by someone after the deploy


def plan_host_rollback(record: Record, current: dict[str, FileFact], saved: dict[str, FileFact],
                       ) -> HostRollback:
    """Pure: what undoing `record` means for this host's files as they are now."""
    changes, conflicts = [], []
    ddir = f"{DEPLOYS}/{record.id}"
    for entry in record.files:
        path = entry["path"]
        now = current.get(path, FileFact(path, None))
        now_sha = planning.sha256(now.content)
        if now.link is None and now_sha != entry["after_sha256"]:
            conflicts.append(path)
        if entry.get("before_link"):
            changes.append(planning.FileChange(path, now.content, None, "", "", now.mode, now.owner,
                                               after_link=entry["before_link"]))
        elif entry["existed"]:
            old = saved.get(f"{ddir}/{entry['saved']}")
            if old is None or old.content is None:
                raise TcsessionError(f"{record.host}: saved copy of {path} for deploy {record.id} is "
                                     f"missing from {ddir}; cannot restore it")
            if planning.sha256(old.content) != entry["before_sha256"]:
                raise TcsessionError(f"{record.host}: saved copy of {path} in {ddir} does not match its "
                                     "checksum in the manifest; refusing to restore it")
            changes.append(planning.FileChange(path, now.content, old.content, entry["before_mode"],
                                               entry["before_owner"], now.mode, now.owner))
        else:
            changes.append(planning.FileChange(path, now.content, None, "", "", now.mode, now.owner))
    return HostRollback(record, tuple(changes), tuple(conflicts))


def render_restore_script(rb: HostRollback) -> str:
    """Writes the restored files atomically, removes the created ones, then marks the deploy
    rolled back. The bytes it overwrites (with --force, someone's edit) are kept beside it."""
    ddir = f"{DEPLOYS}/{rb.record.id}"
    lines = ["set -e", "umask 077", f"mkdir -p {ddir}/overwritten"]
    for i, c in enumerate(rb.changes):
        q = shlex.quote(c.path)
        if c.path in rb.conflicts and c.before is not None:
            lines.append(f"cp -p {q} {ddir}/overwritten/{i}")
        if c.after_link is not None:
            lines.append(f"rm -f {q} && ln -s {shlex.quote(c.after_link)} {q}")
        elif c.after is None:
            lines.append(f"rm -f {q}")
        else:
            lines.append(f"tmp=$(mktemp {q}.tcsession.XXXXXX)")
            lines.append(f"printf %s {base64.b64encode(c.after).decode()} | base64 -d > \"$tmp\"")
            lines.append(f"chown {shlex.quote(c.owner)} \"$tmp\" && chmod {c.mode} \"$tmp\" && mv -f \"$tmp\" {q}")
    for d in sorted(rb.record.created_dirs, key=len, reverse=True):
        lines.append(f"rmdir {shlex.quote(d)} 2>/dev/null || true")
    lines.append(f"date -u +%FT%TZ > {ddir}/rolled-back")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- tasks


def read_history(remote: Remote, inv: Inventory) -> dict[str, list[Record]]:
    results = remote.run_all(inv.hosts, HISTORY_SCRIPT)
    _require_ok(results, "reading the deploy history")
    return {name: parse_history(r.stdout, name) for name, r in results.items()}


def history(inv: Inventory) -> dict[str, list[Record]]:
    with Remote(inv) as remote:
        return read_history(remote, inv)


def print_history(hist: dict[str, list[Record]], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({h: [dataclasses.asdict(r) for r in recs] for h, recs in hist.items()}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tcsession deploys (newest last)")
    for col in ("deploy", "mode", "time", "hosts", "files", "state"):
        table.add_column(col)
    ids = sorted({r.id for recs in hist.values() for r in recs})
    for i in ids:
        recs = [r for recs in hist.values() for r in recs if r.id == i]
        table.add_row(i, recs[0].mode, recs[0].time, ", ".join(r.host for r in recs),
                      str(sum(len(r.files) for r in recs)),
                      "rolled back" if all(r.rolled_back for r in recs) else "applied")
    Console().print(table)


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


def rollback(inv: Inventory, to: str | None = None, force: bool = False, quiet: bool = False) -> list[str]:
    """Undo the latest deploy (or every deploy after `to`) on every host; returns the ids undone."""
    progress = Progress(quiet)
    done = []
    with Remote(inv) as remote:
        hist = read_history(remote, inv)
        targets = _targets(hist, to)
        if not targets:
            progress.say(f"already at {to}: nothing to roll back", "green")
        for deploy_id in targets:
            _rollback_one(remote, inv, hist, deploy_id, force, progress)
            done.append(deploy_id)
            hist = read_history(remote, inv)
    return done


def _rollback_one(remote: Remote, inv: Inventory, hist, deploy_id: str, force: bool,
                  progress: Progress) -> None:
    started = time.monotonic()
    records = {h: next((r for r in recs if r.id == deploy_id), None) for h, recs in hist.items()}
    records = {h: r for h, r in records.items() if r is not None and not r.rolled_back}
    paths = {h: [e["path"] for e in r.files] + [f"{DEPLOYS}/{r.id}/{e['saved']}" for e in r.files if e.get("saved")]
             for h, r in records.items()}
    hosts = [inv.host(h) for h in records]
    results = remote.run_all(hosts, lambda h: files_script(paths[h.name]))
    _require_ok(results, "reading files to restore")
    plans = {}
    for h, r in records.items():
        files = parse_files(split_sections(results[h].stdout))
        plans[h] = plan_host_rollback(r, files, files)
    conflicts = [f"{h}:{p}" for h, rb in plans.items() for p in rb.conflicts]
    if conflicts and not force:
        raise TcsessionError(f"rollback of {deploy_id} refused: changed since that deploy: "
                             f"{', '.join(conflicts)}; keep your edits, or use --force (the edited "
                             "files are kept in the deploy's state directory)")
    # Show it as a plan, by the deploy's own printer.
    facts = gather(remote, list(inv.hosts))
    the_plan = _service_plan(inv, plans, facts)
    show_plan(the_plan, progress, diffs=False)
    states = HostStates(inv)
    results = remote.run_all(hosts, lambda h: render_restore_script(plans[h.name]))
    _require_ok(results, f"restoring files of {deploy_id}")
    states.set(list(records), "files restored")
    _apply_rollback_services(remote, inv, plans, facts, progress, states)
    progress.say(f"rolled back {deploy_id} in {time.monotonic() - started:.1f} s", "green")


def _service_plan(inv: Inventory, plans: dict[str, HostRollback], facts) -> planning.Plan:
    hosts = []
    for h in inv.hosts:
        rb = plans.get(h.name)
        if rb is None:
            hosts.append(planning.HostPlan(h.name, h.role))
            continue
        unit = "nginx" if h.role == "nginx" else (planning.installed_tomcat(facts[h.name]).unit
                                                  if planning.installed_tomcat(facts[h.name]) else "")
        hosts.append(planning.HostPlan(h.name, h.role, rb.changes, bool(unit), unit))
    return planning.Plan("rollback", tuple(hosts))


def _apply_rollback_services(remote: Remote, inv: Inventory, plans: dict[str, HostRollback], facts,
                             progress: Progress, states: HostStates) -> None:
    """Each service goes back to its state before the deploy: running ones restart with the
    restored files (Tomcats one at a time, each serving before the next); others stop."""
    order = [inv.nginx] + list(inv.tomcats)
    # The site nginx serves once restored, if nginx keeps running: the rolling restarts use it.
    nrb = plans.get(inv.nginx.name)
    site_change = next((c for c in nrb.changes if c.path == planning.NGINX_SITE), None) if nrb else None
    current_site = facts[inv.nginx.name].files.get(planning.NGINX_SITE)
    site = site_change.after if site_change else (current_site.content if current_site else None)
    if nrb and nrb.record.services_before.get("nginx") != "active":
        site = None
    for h in order:
        rb = plans.get(h.name)
        if rb is None:
            continue
        if h.role == "nginx":
            unit = "nginx"
        else:
            layout = planning.installed_tomcat(facts[h.name])
            if layout is None:
                continue
            unit = layout.unit
        if h.role == "tomcat":
            _rollback_memcached(remote, h, rb, facts[h.name], progress)
        was = rb.record.services_before.get(unit, "inactive")
        stamp = planning.applied_path(unit)
        # The configuration the service runs with after the rollback, for the next deploy's
        # "is a restart owed?" question.
        after = {c.path: c.after for c in rb.changes}
        current = facts[h.name].files
        paths = ((planning.NGINX_SITE,) if h.role == "nginx"
                 else planning.tomcat_config_paths(planning.installed_tomcat(facts[h.name])))
        digest = planning.config_digest({p: after[p] if p in after else
                                         (current[p].content if p in current else None) for p in paths})
        t = time.monotonic()
        if was != "active":
            remote.run(h, f"systemctl disable -q --now {unit}; rm -f {stamp}")
            progress.step(h.name, f"stopped {unit} (it was {was or 'absent'} before {rb.record.id})",
                          time.monotonic() - t)
        elif h.role == "nginx":
            r = remote.run(h, "nginx -t 2>&1 && systemctl reload-or-restart nginx && "
                           + stamp_command("nginx", digest))
            if not r.ok:
                raise TcsessionError(f"{h.name}: nginx rejected the restored configuration: {r.why()}")
            progress.step(h.name, "nginx -t ok, reloaded nginx", time.monotonic() - t)
        else:
            test_page = any(c.path.endswith("/test.jsp") and c.after is not None for c in rb.changes) or any(
                p.endswith("/test.jsp") and f.content is not None for p, f in current.items()
                if p not in after)
            rolling_restart(remote, inv, h, unit, digest, progress, peers_up=True, site=site,
                            test_page=test_page)
        states.set(h.name, "done")


def _rollback_memcached(remote: Remote, host, rb: HostRollback, facts, progress: Progress) -> None:
    """When the deploy changed memcached's configuration: memcached back to its state before it
    (restarted with the restored file, or stopped), before the Tomcat that uses it."""
    path = planning.memcached_conf_path(facts.package_manager)
    change = next((c for c in rb.changes if c.path == path), None)
    if change is None:
        return
    if rb.record.services_before.get("memcached") == "active":
        restart_memcached(remote, host, planning.config_digest({path: change.after}), progress, enable=False)
    else:
        t = time.monotonic()
        remote.run(host, f"systemctl disable -q --now memcached; rm -f {planning.applied_path('memcached')}")
        progress.step(host.name, f"stopped memcached (it was not running before {rb.record.id})", time.monotonic() - t)
