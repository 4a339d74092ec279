"""`inv deploy`: facts -> install -> plan -> apply (files, nginx, Tomcats one at a time) -> checks.

Side effects live here; what to change is decided by pure code in `tcsession.plan`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shlex
import time
import uuid

from tcsession import nginx
from tcsession import plan as planning
from tcsession.errors import TcsessionError
from tcsession.facts import FACTS_SCRIPT, HostFacts, files_script, parse_facts
from tcsession.inventory import Host, Inventory
from tcsession.probes import parse_memcached_probe, parse_ss, reachable_on
from tcsession.remote import Remote, Result

STATE_DIR = "/var/lib/tcsession"
MODES = ("delta", "msm")


class Progress:
    """Which host, which step, how long: one line per step (rich, no markup from outside)."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(highlight=False)
        self.quiet = quiet
        self.started = time.monotonic()

    def step(self, host: str, what: str, seconds: float | None = None, style: str = "") -> None:
        if self.quiet:
            return
        from rich.text import Text

        line = Text(f"  {host:<10} ", style="bold")
        line.append(what, style=style)
        if seconds is not None:
            line.append(f"  {seconds:.1f} s", style="dim")
        self.console.print(line)

    def say(self, text: str, style: str = "") -> None:
        if not self.quiet:
            from rich.text import Text

            self.console.print(Text(text, style=style))


@dataclasses.dataclass
class DeployReport:
    deploy_id: str | None
    plan: planning.Plan | None
    installed: dict
    changed: bool
    seconds: float = 0.0
    commands: int = 0


# --------------------------------------------------------------------------- facts


def gather(remote: Remote, hosts: list[Host]) -> dict[str, HostFacts]:
    script = FACTS_SCRIPT + files_script(planning.files_to_read()) + planning.jars_script()
    results = remote.run_all(hosts, script)
    _require_ok(results, "reading facts")
    return {name: parse_facts(r.stdout) for name, r in results.items()}


def _require_ok(results: dict[str, Result], what: str) -> None:
    failed = [r for r in results.values() if not r.ok]
    if failed:
        detail = "; ".join(f"{r.host}: {r.why()}" for r in failed)
        raise TcsessionError(f"{what} failed on {len(failed)} host(s), nothing changed after it: {detail}")


# --------------------------------------------------------------------------- install


def install_command(package_manager: str | None, packages: tuple[str, ...]) -> str:
    pkgs = " ".join(shlex.quote(p) for p in packages)
    if package_manager == "apt-get":
        base = f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {pkgs}"
        # Only refresh the lists when the install cannot be done from what is there.
        return f"{base} >/tmp/tcsession-install.log 2>&1 || {{ apt-get update -q >/dev/null 2>&1; {base}; }}"
    if package_manager in ("dnf", "yum"):
        return f"{package_manager} install -y -q {pkgs}"
    raise TcsessionError(f"no supported package manager (apt-get, dnf, yum) to install {pkgs}")


# --------------------------------------------------------------------------- apply files


def render_apply_script(deploy_id: str, mode: str, changes: tuple[planning.FileChange, ...],
                        packages: tuple[str, ...] = (), services: dict | None = None) -> str:
    """One shell script that saves the prior bytes, writes the manifest, then every file
    atomically (temp file + mv) with its owner and mode."""
    ddir = f"{STATE_DIR}/deploys/{deploy_id}"
    lines = ["set -e", "umask 077", f"mkdir -p {ddir}/files", f"chmod 700 {STATE_DIR} {STATE_DIR}/deploys {ddir}"]
    manifest = {"id": deploy_id, "mode": mode, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "packages_installed": list(packages), "services_before": services or {}, "files": []}
    for i, c in enumerate(changes):
        entry = {"path": c.path, "existed": c.before is not None or c.before_link is not None,
                 "before_sha256": planning.sha256(c.before), "after_sha256": planning.sha256(c.after),
                 "before_mode": c.before_mode, "before_owner": c.before_owner,
                 "before_link": c.before_link}
        if c.before is not None:
            entry["saved"] = f"files/{i}"
            lines.append(f"printf %s {base64.b64encode(c.before).decode()} | base64 -d > {ddir}/files/{i}")
        manifest["files"].append(entry)
    lines.append(f"printf %s {shlex.quote(json.dumps(manifest, indent=1))} > {ddir}/manifest.json")
    lines.append("umask 022")  # directories made for the files must be readable by the service
    for c in changes:
        q = shlex.quote(c.path)
        if c.after is None:
            lines.append(f"rm -f {q}")
            continue
        parent = shlex.quote(c.path.rsplit("/", 1)[0])
        lines.append(f"[ -d {parent} ] || {{ mkdir -p {parent} && echo {parent} >> {ddir}/created-dirs; }}")
        lines.append(f"tmp=$(mktemp {q}.tcsession.XXXXXX)")
        lines.append(f"printf %s {base64.b64encode(c.after).decode()} | base64 -d > \"$tmp\"")
        lines.append(f"chown {shlex.quote(c.owner)} \"$tmp\" && chmod {c.mode} \"$tmp\"")
        lines.append(f"mv -f \"$tmp\" {q}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- services


def wait_serving_script(unit: str, address: str, port: int, timeout: float, path: str = "/test.jsp",
                        any_status: bool = False) -> str:
    """On the host: wait until `path` answers 200 (or any HTTP status), at most `timeout` s; give
    up at once if the service stops (a failed start)."""
    ok = '[ "$c" != 000 ]' if any_status else '[ "$c" = 200 ]'
    tries = int(timeout / 0.25)
    return (f"(i=0; while [ $i -lt {tries} ]; do "
            f"systemctl is-active -q {unit} || {{ echo '{unit} stopped while starting' >&2; exit 1; }}; "
            f"c=$(curl -s -o /dev/null -m 2 -w '%{{http_code}}' http://{address}:{port}{path} || true); "
            f"{ok} && exit 0; i=$((i+1)); sleep 0.25; done; "
            f"echo \"test page answered ${{c:-nothing}} after {timeout:g} s\" >&2; exit 1)")


def log_tail_command(unit: str, lines: int = 15) -> str:
    # "Failed to kill control group" is systemd noise inside containers, never the cause.
    return (f"journalctl -u {unit} -n 400 --no-pager -o cat 2>/dev/null | grep -v -e 'Failed to kill control group' "
            f"-e 'Failed to dump process list' -e '^\\s*at ' -e '^\\s*\\.\\.\\. [0-9]* more' | tail -n {lines}")


@dataclasses.dataclass(frozen=True)
class ExpectedPort:
    host: str
    proto: str
    address: str
    port: int
    unit: str


def expected_ports(inv: Inventory, mode: str) -> list[ExpectedPort]:
    out = [ExpectedPort(inv.nginx.name, "tcp", inv.nginx.address, inv.nginx.http_port, "nginx")]
    for t in inv.tomcats:
        out.append(ExpectedPort(t.name, "tcp", t.address, t.http_port, "tomcat"))
        if mode == "msm" and t.memcached:
            out.append(ExpectedPort(t.name, "tcp", t.address, inv.msm.memcached_port, "memcached"))
        if mode == "delta":
            out.append(ExpectedPort(t.name, "tcp", t.address, inv.delta.receiver_port, "tomcat"))
            if inv.delta.membership == "multicast":
                out.append(ExpectedPort(t.name, "udp", inv.delta.multicast_address,
                                        inv.delta.multicast_port, "tomcat"))
    return out


def port_listening(e: ExpectedPort, listeners) -> bool:
    """TCP: reachable on the expected address (or a wildcard); UDP (multicast): the port bound."""
    if e.proto == "udp":
        return any(l.proto == "udp" and l.port == e.port for l in listeners)
    return reachable_on(listeners, e.address, e.port)


def missing_ports(inv: Inventory, mode: str, listeners_by_host: dict) -> list[ExpectedPort]:
    return [e for e in expected_ports(inv, mode) if not port_listening(e, listeners_by_host[e.host])]


# --------------------------------------------------------------------------- deploy


def new_deploy_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class HostStates:
    """Where each host is in a run: shown when the run stops halfway."""

    def __init__(self, inv: Inventory):
        self.state = {h.name: "not started" for h in inv.hosts}

    def set(self, names, state: str) -> None:
        for n in [names] if isinstance(names, str) else names:
            self.state[n] = state

    def summary(self) -> str:
        return "; ".join(f"{n}: {s}" for n, s in self.state.items())


def prepare_msm_jars(inv: Inventory, facts: dict[str, HostFacts], installs: dict, progress: Progress,
                     have: dict | None = None) -> dict[str, tuple]:
    """Host name -> the MSM jars for its Tomcat major, for every Tomcat host whose major is known
    (installed, or named by the package about to be installed). Control machine only."""
    from tcsession import maven, msmjars  # noqa: PLC0415

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
            jars, warnings = msmjars.prepare_jars(inv.msm, major, maven.lock_path_for(inv.path))
            by_major[major] = jars
            converted = sum(j.converted for j in jars)
            progress.step("control", f"msm jars for Tomcat {major}: {len(jars)} verified"
                          + (f", {converted} converted to jakarta" if converted else ""), time.monotonic() - started)
            for w in warnings:
                progress.say(f"  warning: {w}", "yellow")
        out[t.name] = by_major[major]
    return out


def memcached_probe_script(inv: Inventory) -> str:
    """On a Tomcat host: ask every memcached node for its stats over TCP (bash's /dev/tcp), one
    `@@memcached <address>:<port>` section each (empty when unreachable)."""
    parts = []
    for t in inv.tomcats:
        if t.memcached:
            a, p = t.address, inv.msm.memcached_port
            parts.append(f"echo '@@memcached {a}:{p}'; timeout 3 bash -c 'exec 3<>/dev/tcp/{a}/{p} && "
                         "printf \"stats\\r\\nquit\\r\\n\" >&3 && cat <&3' 2>/dev/null | tr -d '\\r' | "
                         "grep -E '^STAT (version|curr_items|curr_connections) ' || true")
    return "\n".join(parts) + "\n"


def check_memcached_reachable(remote: Remote, inv: Inventory, progress: Progress) -> None:
    results = remote.run_all(inv.tomcats, memcached_probe_script(inv))
    _require_ok(results, "probing memcached")
    for name, r in results.items():
        for node, stats in parse_memcached_probe(r.stdout).items():
            if "version" not in stats:
                raise TcsessionError(
                    f"{name}: cannot reach memcached at {node} (MSM needs every node from every Tomcat); "
                    f"check that memcached runs there and that a firewall lets {name} in on "
                    f"{node.rsplit(':', 1)[1]}/tcp")
    n = sum(t.memcached for t in inv.tomcats)
    progress.step("all", f"memcached: {n} node(s) reachable from {len(inv.tomcats)} Tomcat(s)")


def deploy(inv: Inventory, mode: str, dry_run: bool = False, quiet: bool = False) -> DeployReport:
    if mode not in MODES:
        raise TcsessionError(f"--mode={mode}: unknown or not available; use one of {', '.join(MODES)}")
    progress = Progress(quiet)
    started = time.monotonic()
    states = HostStates(inv)
    deploy_id = None if dry_run else new_deploy_id()
    with Remote(inv) as remote:
        t = time.monotonic()
        facts = gather(remote, list(inv.hosts))
        progress.step("all", f"facts from {len(inv.hosts)} hosts", time.monotonic() - t)
        for h in inv.hosts:
            if facts[h.name].package_manager is None:
                raise TcsessionError(f"{h.name}: no apt-get, dnf or yum found; tcsession supports "
                                     "Debian/Ubuntu (apt) and the RHEL family (yum/dnf)")
        services_before = {h.name: dict(facts[h.name].active) for h in inv.hosts}

        # 1. packages
        installs = {h.name: planning.packages_to_install(h, facts[h.name], mode) for h in inv.hosts}
        installs = {k: v for k, v in installs.items() if v}
        # msm: the jars, resolved and checked on this machine before any host is changed
        jars: dict[str, tuple] = {}
        if mode == "msm":
            jars = prepare_msm_jars(inv, facts, installs, progress)
        if dry_run:
            for name, pkgs in installs.items():
                progress.step(name, f"would install {' '.join(pkgs)}", style="yellow")
            if any(planning.installed_tomcat(facts[t.name]) is None for t in inv.tomcats):
                progress.say("  (files are planned after Tomcat is installed: run without --dry-run "
                             "to install, or install Tomcat first to see the file diffs)", "dim")
                return DeployReport(None, None, installs, bool(installs), time.monotonic() - started,
                                    remote.commands)
        try:
            if installs and not dry_run:
                t = time.monotonic()
                states.set(installs, "installing packages")
                results = remote.run_all([inv.host(n) for n in installs], lambda h: install_command(
                    facts[h.name].package_manager, installs[h.name]))
                for name, r in results.items():
                    states.set(name, "packages installed" if r.ok else f"failed installing: {r.why()}")
                _require_ok(results, "installing packages")
                for name, pkgs in installs.items():
                    progress.step(name, f"installed {' '.join(pkgs)}", results[name].seconds)
                facts.update(gather(remote, [inv.host(n) for n in installs]))
                if mode == "msm":  # a Tomcat whose major was known only once installed
                    jars = prepare_msm_jars(inv, facts, {}, progress, have=jars)

            # 2. plan (pure)
            the_plan = planning.plan(inv, facts, mode, jars)
            show_plan(the_plan, progress, diffs=dry_run)
            if dry_run or the_plan.empty:
                if the_plan.empty and not installs:
                    progress.say("no changes", "green")
                return DeployReport(None, the_plan, installs, bool(installs) or not the_plan.empty,
                                    time.monotonic() - started, remote.commands)

            # 3. files, in parallel, with saved prior bytes and a manifest
            recorded = [h for h in inv.hosts if the_plan.host(h.name).files or h.name in installs]
            t = time.monotonic()
            results = remote.run_all(recorded, lambda h: render_apply_script(
                deploy_id, mode, the_plan.host(h.name).files, installs.get(h.name, ()),
                services_before[h.name]))
            for name, r in results.items():
                states.set(name, "files written" if r.ok else f"failed writing files: {r.why()}")
            _require_ok(results, "writing files")
            for h in recorded:
                progress.step(h.name, f"wrote {len(the_plan.host(h.name).files)} file(s)", results[h.name].seconds)
            apply_services(remote, inv, the_plan, facts, progress, states)

            # 6. ports, and in msm mode every memcached reachable from every Tomcat
            check_ports(remote, inv, mode, progress)
            if mode == "msm":
                check_memcached_reachable(remote, inv, progress)
        except TcsessionError as e:
            if deploy_id:
                raise TcsessionError(f"{e} -- deploy {deploy_id} stopped; hosts: {states.summary()}; "
                                     "run the deploy again to converge, or `inv rollback` to undo it") from None
            raise
        report = DeployReport(deploy_id, the_plan, installs, True, time.monotonic() - started,
                              remote.commands)
    progress.say(f"deployed {mode} ({deploy_id}) in {report.seconds:.1f} s", "green")
    return report


def apply_services(remote: Remote, inv: Inventory, the_plan: planning.Plan, facts: dict[str, HostFacts],
                   progress: Progress, states: HostStates) -> None:
    """nginx first (checked, then reloaded), then the Tomcats one at a time: each serves, and has
    received the session state, before the next one restarts. The first failure stops the run:
    the Tomcats not yet restarted keep serving with what they run."""
    for t in inv.tomcats:  # memcached first (MSM connects at start), one host at a time
        hp = the_plan.host(t.name)
        if hp.memcached:
            states.set(t.name, "restarting memcached")
            restart_memcached(remote, t, hp.memcached_digest, progress)
    nplan = the_plan.host(inv.nginx.name)
    if nplan.restart:
        states.set(inv.nginx.name, "reloading nginx")
        _nginx_apply(remote, inv.nginx, facts[inv.nginx.name], nplan.digest, progress)
    states.set(inv.nginx.name, "done")
    site_change = next((c for c in nplan.files if c.path == planning.NGINX_SITE), None)
    site = site_change.after if site_change else facts[inv.nginx.name].files[planning.NGINX_SITE].content
    up = [t for t in inv.tomcats if facts[t.name].active.get(the_plan.host(t.name).service) == "active"
          and not the_plan.host(t.name).restart]
    for t in inv.tomcats:
        hp = the_plan.host(t.name)
        if hp.restart:
            states.set(t.name, f"restarting {hp.service}")
            rolling_restart(remote, inv, t, hp.service, hp.digest, progress, peers_up=bool(up), site=site)
            up.append(t)
        states.set(t.name, "done")


def restart_memcached(remote: Remote, host: Host, digest: str, progress: Progress, enable: bool = True) -> None:
    """Restart memcached with its configuration (digest: the stamp of it) or stop the run with
    memcached's last log lines."""
    started = time.monotonic()
    r = remote.run(host, ("systemctl enable -q memcached && " if enable else "")
                   + "systemctl restart memcached && " + stamp_command("memcached", digest))
    if not r.ok:
        tail = remote.run(host, log_tail_command("memcached"))
        raise TcsessionError(f"{host.name}: memcached did not restart: {r.why()}; last log lines: "
                             f"{' | '.join(tail.stdout.strip().splitlines()[-5:])}")
    progress.step(host.name, "restarted memcached", time.monotonic() - started)


def _put_site(remote: Remote, host: Host, site: bytes, what: str) -> None:
    q = planning.NGINX_SITE
    r = remote.run(host, f"tmp=$(mktemp {q}.tcsession.XXXXXX) && printf %s {base64.b64encode(site).decode()} "
                   f"| base64 -d > \"$tmp\" && chmod 644 \"$tmp\" && mv -f \"$tmp\" {q} && "
                   "nginx -t -q && systemctl reload nginx")
    if not r.ok:
        raise TcsessionError(f"{host.name}: could not {what}: {r.why()}")


def rolling_restart(remote: Remote, inv: Inventory, host: Host, unit: str, digest: str, progress: Progress,
                    peers_up: bool, site: bytes | None, test_page: bool = True) -> None:
    """One node's turn: out of service in nginx (marked `down`: its sessions go to their backup
    nodes, nothing new reaches it), restarted, checked, back in service. Without a site (nginx
    not set up yet) or without peers, a plain restart."""
    drain = site is not None and peers_up and len(inv.tomcats) > 1
    if drain:
        _put_site(remote, inv.nginx, nginx.drain(site.decode(), host.address, host.http_port).encode(),
                  f"take {host.name} out of service")
    try:
        _restart_tomcat(remote, inv, host, unit, digest, progress, peers_up, test_page)
    finally:
        if drain:
            _put_site(remote, inv.nginx, site, f"put {host.name} back in service")


def stamp_command(unit: str, digest: str) -> str:
    path = planning.applied_path(unit)
    return f"mkdir -p {planning.APPLIED_DIR} && echo {digest} > {path}"


def _nginx_apply(remote: Remote, host: Host, facts: HostFacts, digest: str, progress: Progress) -> None:
    t = time.monotonic()
    action = "reload" if facts.active.get("nginx") == "active" else "restart"
    r = remote.run(host, f"nginx -t 2>&1 && systemctl enable -q nginx && systemctl {action} nginx && "
                   + stamp_command("nginx", digest))
    if not r.ok:
        raise TcsessionError(f"{host.name}: nginx configuration rejected or nginx did not {action}: "
                             f"{r.why()} (the previous site is saved; `inv rollback` restores it)")
    progress.step(host.name, f"nginx -t ok, {action}ed nginx", time.monotonic() - t)


def _restart_tomcat(remote: Remote, inv: Inventory, host: Host, unit: str, digest: str,
                    progress: Progress, peers_up: bool, test_page: bool = True) -> None:
    """Restart and wait until it serves (our test page answers 200; without it, as after a
    rollback to before the first deploy, any HTTP answer on /), then stamp the configuration
    it runs with."""
    t = time.monotonic()
    since = int(time.time()) - 1
    wait = (wait_serving_script(unit, host.address, host.http_port, 120.0) if test_page
            else wait_serving_script(unit, host.address, host.http_port, 120.0, "/", any_status=True))
    r = remote.run(host, f"systemctl enable -q {unit} && systemctl restart {unit} && " + wait
                   + " && " + stamp_command(unit, digest))
    if not r.ok:
        tail = remote.run(host, log_tail_command(unit))
        raise TcsessionError(f"{host.name}: {unit} did not come back serving: {r.why()}; "
                             f"last log lines: {' | '.join(tail.stdout.strip().splitlines()[-5:])}")
    what = f"restarted {unit}, serving"
    if peers_up and inv.delta.manager == "delta":
        log = remote.run(host, f"journalctl -u {unit} --since @{since} --no-pager -o cat")
        if "session state" in log.stdout and "received" in log.stdout:
            what += ", session state received"
        elif "no members active" in log.stdout.lower() or "No members active" in log.stdout:
            what += ", no peer answered (no state received)"
    progress.step(host.name, what, time.monotonic() - t)


def check_ports(remote: Remote, inv: Inventory, mode: str, progress: Progress) -> None:
    results = remote.run_all(inv.hosts, "ss -Hntl; echo @@udp; ss -Hnul")
    _require_ok(results, "checking ports")
    listeners = {}
    for name, r in results.items():
        tcp, _, udp = r.stdout.partition("@@udp")
        listeners[name] = parse_ss(tcp, "tcp") + parse_ss(udp, "udp")
    missing = missing_ports(inv, mode, listeners)
    if missing:
        e = missing[0]
        host = inv.host(e.host)
        unit = "nginx" if host.role == "nginx" else "memcached" if e.unit == "memcached" else (
            planning.installed_tomcat(gather(remote, [host])[host.name]).unit)
        tail = remote.run(host, log_tail_command(unit))
        raise TcsessionError(
            f"{e.host}: nothing listens on {e.proto} {e.address}:{e.port} ({unit}); "
            f"last log lines: {' | '.join(tail.stdout.strip().splitlines()[-5:])}")
    progress.step("all", f"ports listening: {len(expected_ports(inv, mode))} checked")


def print_diff(console, diff: str) -> None:
    """A unified diff, coloured by line, never wrapped (it must stay a valid patch)."""
    from rich.text import Text

    styles = {"+": "green", "-": "red", "@": "cyan"}
    for line in diff.splitlines():
        style = "bold" if line.startswith(("+++", "---")) else styles.get(line[:1], "")
        console.print(Text(line, style=style), soft_wrap=True)


def show_plan(the_plan: planning.Plan, progress: Progress, diffs: bool) -> None:
    for hp in the_plan.hosts:
        if hp.empty:
            progress.step(hp.host, "up to date", style="dim")
            continue
        for c in hp.files:
            verb = "create" if c.before is None and c.before_link is None else (
                "remove" if c.after is None else "change")
            progress.step(hp.host, f"{verb} {c.path}", style="yellow")
            if diffs and not progress.quiet:
                print_diff(progress.console, c.diff())
        if hp.memcached:
            progress.step(hp.host, "restart memcached (before the Tomcats)", style="yellow")
        if hp.restart:
            progress.step(hp.host, f"{'restart' if hp.role == 'tomcat' else 'reload'} {hp.service}"
                          + (" (one node at a time)" if hp.role == "tomcat" else ""), style="yellow")
