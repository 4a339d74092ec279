"""The contract for scripts (docs/cli.md): the exit codes and the JSON of `--json`.

Every JSON object carries `"schema": "tcsession.<command>/1"`, `"ok"` and `"exit"` (the exit code
the command ends with), is printed on stdout, failures included (then `"error"` and `"errors"`,
and `"unreachable"` naming the hosts that could not be reached). Hosts are named by their
inventory names; each check has a stable `"id"` (`port.http`, `cluster.members`, ...) beside its
display text. A later incompatible change gets a new schema version (`/2`). Pure code.
"""

from __future__ import annotations

import re

from tcsession.errors import FAILED, INTERRUPTED, OK, UNREACHABLE, UnreachableError
from tcsession.inventory import Inventory

VERSION = 1


def schema(command: str) -> str:
    return f"tcsession.{command}/{VERSION}"


# --------------------------------------------------------------------------- check ids

#: Display names (as status and preflight print them) -> stable ids. Ports and per-service
#: names are matched below.
FIXED_IDS = {
    # status
    "tomcat package": "package.tomcat", "nginx package": "package.nginx",
    "nginx active": "service.nginx", "memcached active": "service.memcached",
    "cluster ports on own address": "bind.own_address",
    "delta cluster in server.xml": "cluster.config", "cluster encryption": "cluster.encryption",
    "cluster members": "cluster.members",
    "msm Manager": "msm.manager", "msm jars": "msm.jars", "memcached reachable": "memcached.reachable",
    "msm initialized": "msm.started", "tcsession site": "nginx.site", "certificate": "tls.certificate",
    # preflight
    "host name": "host.name", "clock": "clock", "multicast": "multicast", "ports": "ports.free",
    "java": "java", "jvm_route": "jvm_route", "disk": "disk", "firewall": "firewall",
    "nginx": "nginx.version", "selinux": "selinux", "certificate and key": "tls.pair",
    # both
    "automatic upgrades": "packages.automatic",
}
_PORT = re.compile(r"(tcp|udp) (\S+):(\d+)( \(https\))?")


def port_ids(inv: Inventory, role: str) -> dict[tuple[str, int], str]:
    """(protocol, port) -> id, for a host of `role`."""
    if role == "nginx":
        out = {("tcp", inv.nginx.http_port): "port.http"}
        if inv.tls:
            out[("tcp", inv.tls.https_port)] = "port.https"
        return out
    out = {("tcp", inv.delta.receiver_port): "port.receiver", ("udp", inv.delta.multicast_port): "port.multicast",
           ("tcp", inv.msm.memcached_port): "port.memcached"}
    out.update({("tcp", t.http_port): "port.http" for t in inv.tomcats})
    return out


def check_id(what: str, role: str, inv: Inventory) -> str:
    """The stable id of a check shown as `what` on a host of `role`."""
    if what in FIXED_IDS:
        return FIXED_IDS[what]
    if m := _PORT.fullmatch(what):
        return port_ids(inv, role).get((m[1], int(m[3])), f"port.{m[1]}.{m[3]}")
    if what.startswith("memcached only on "):
        return "memcached.bind"
    if what.startswith("app /"):
        return "app." + what[len("app /"):].replace("/", "#")
    if what.endswith(" active"):  # the Tomcat's unit: tomcat10, tomcat9, tomcat
        return "service.tomcat"
    return "other." + re.sub(r"[^a-z0-9]+", "_", what.lower()).strip("_")


def _with_ids(checks: list[dict], role: str, inv: Inventory) -> list[dict]:
    """Each check with its id, and `"warning": true` on one that passes with a warning (its detail
    starts "warning: ", e.g. packages.automatic): scripts can tell it from a plain pass."""
    return [{"id": check_id(c["check"], role, inv), **c,
             **({"warning": True} if c["ok"] and c["detail"].startswith("warning: ") else {})} for c in checks]


# --------------------------------------------------------------------------- the commands' JSON


def status_exit(report) -> int:
    if any(not h.reachable for h in report.hosts):
        return UNREACHABLE
    return OK if report.healthy else FAILED


def status_json(report, inv: Inventory, command: str = "status") -> dict:
    d = report.to_dict()
    for h in d["hosts"]:
        if "checks" in h:
            h["checks"] = _with_ids(h["checks"], h["role"], inv)
        if not h["reachable"]:
            h["error"] = next((x.error for x in report.hosts if x.name == h["name"]), None)
    code = status_exit(report)
    out = {"schema": schema(command), "ok": code == OK, "exit": code}
    if code == UNREACHABLE:
        out["unreachable"] = {h.name: h.error or "unreachable" for h in report.hosts if not h.reachable}
    return out | d


def preflight_json(report, inv: Inventory) -> dict:
    d = report.to_dict()
    for h in d["hosts"]:
        h["checks"] = _with_ids(h["checks"], h["role"], inv)
    code = OK if report.ok else FAILED
    return {"schema": schema("preflight"), "ok": report.ok, "exit": code} | d


def history_json(hist: dict, notes) -> dict:
    ids = sorted({r.id for recs in hist.values() for r in recs})
    summary = []
    for i in ids:
        recs = [r for recs in hist.values() for r in recs if r.id == i]
        summary.append({"id": i, "mode": recs[0].mode, "time": recs[0].manifest.time,
                        "hosts": [r.host for r in recs],
                        "state": "rolled back" if all(r.rolled_back for r in recs) else "applied"})
    return {"schema": schema("history"), "ok": True, "exit": OK, "summary": summary,
            "deploys": {h: [r.to_dict() for r in recs] for h, recs in hist.items()}, "notes": list(notes)}


def _steps(steps) -> list[dict]:
    return [{"host": s.host, "step": s.describe(), "changes": not s.check_only} for s in steps]


def deploy_json(report) -> dict:
    return {"schema": schema("deploy"), "ok": True, "exit": OK, "mode": report.mode, "dry_run": report.dry_run,
            "deploy_id": report.deploy_id, "changed": report.changed, "switch": report.switch,
            "installed": {h: list(p) for h, p in report.installed.items()},
            "steps": _steps(report.previewed if report.dry_run else report.executed),
            "seconds": round(report.seconds, 3), "ssh_commands": report.commands}


def rollback_json(ids: list[str], plans: list, dry_run: bool) -> dict:
    steps = [s for plan, executed in plans for s in (plan.steps if dry_run else executed)]
    return {"schema": schema("rollback"), "ok": True, "exit": OK, "dry_run": dry_run, "rolled_back": list(ids),
            "steps": _steps(steps)}


def upgrade_json(run_id: str | None, plans: list, dry_run: bool) -> dict:
    """`upgrade --json`: its id (None: nothing to do, or a dry run), and each step (the plan's)."""
    steps = [s for plan in plans for s in plan.steps]
    return {"schema": schema("upgrade"), "ok": True, "exit": OK, "dry_run": dry_run, "upgrade_id": run_id,
            "changed": run_id is not None, "steps": _steps(steps)}


def failure_json(command: str, error: BaseException) -> dict:
    """What a command that stopped says on stdout with --json: its exit code and message."""
    if isinstance(error, KeyboardInterrupt):
        code, lines = INTERRUPTED, [f"{command}: interrupted"]
    else:
        code = getattr(error, "code", FAILED)
        lines = str(error).splitlines() or [type(error).__name__]
    d = {"schema": schema(command), "ok": False, "exit": code, "error": lines[0], "errors": lines}
    if isinstance(error, UnreachableError):
        d["unreachable"] = dict(error.hosts)
    if getattr(error, "run_id", None):  # a deploy or rollback that stopped: which, and where each host is
        d["deploy_id"] = error.run_id
        d["hosts"] = dict(error.where or {})
    return d
