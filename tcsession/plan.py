"""Planning: what a deploy will do, as a Plan of steps computed from facts by pure code.

`plan(inventory, facts, mode)` returns every step of the deploy in order, for every host
(tcsession.steps): packages first (then the files are planned once the packages have put theirs
there: a `Replan` step), the files with their prior bytes saved, memcached, nginx, the Tomcats one
at a time, the checks. Every host is planned before the first step runs, so whatever planning
refuses (a malformed server.xml, a Tomcat with no package) stops the deploy with nothing changed.
Change detection is "did planning produce any step?": a cluster that matches plans nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable

from tcsession import apps as applications
from tcsession import firewall as firewall_rules
from tcsession import cookies, jarscan, msm, nginx, rollout, serialcompat, serverxml, state, unattended, webapp
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, HostFacts
from tcsession.inventory import App, Host, Inventory, uses_multicast
from tcsession.modes import Mode, mode_named
from tcsession.msmjars import MANAGED_JAR
from tcsession.steps import (ApplyFirewall, ApplyNginx, CountSessions, FileChange, InstallPackages, Plan, Replan,
                             RestartMemcached, RestartTomcat,
                             StopService, WriteFiles, manifest_for, sha256)
from tcsession.tomcat import TOMCAT_LAYOUTS, TOMCAT_PREFERENCE, Layout

MANAGED_HEADER = "Managed by tcsession"


def config_digest(files: dict[str, bytes | None]) -> str:
    """Of the files a service reads at start (None: the file does not exist)."""
    h = hashlib.sha256()
    for path in sorted(files):
        content = files[path]
        if content is not None:  # an absent file adds nothing (so a new path to read changes no stamp)
            h.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest()


def tomcat_config_paths(layout: Layout) -> tuple[str, ...]:
    """What a Tomcat restart is owed for when it changes (the test page is recompiled alone);
    the jar list carries the placed jars' checksums."""
    return (layout.server_xml, layout.jvm_options, layout.web_xml, layout.context_xml, layout.app_context,
            state.JARS_LIST)


def _change(fact: FileFact, after: bytes | None, mode: str, owner: str) -> FileChange | None:
    """A FileChange when the file differs from what it should be, else None."""
    if fact.link is not None:
        return FileChange(fact.path, None, after, mode, owner, before_link=fact.link)
    if after is None:
        if fact.content is None:
            return None
        return FileChange(fact.path, fact.content, None, "", "", fact.mode, fact.owner)
    if fact.content == after and (fact.content is None or (fact.mode == mode and fact.owner == owner)):
        return None
    return FileChange(fact.path, fact.content, after, mode, owner, fact.mode, fact.owner)


def _file(files: dict, path: str) -> FileFact:
    return files.get(path) or FileFact(path, None)


def render_jvm_options(layout: Layout, host: Host, mode: Mode) -> bytes:
    opts = [f"-D{webapp.NODE_PROPERTY}={host.name}"]
    if mode.cluster:
        # McastService bind=<address> fails with "Invalid argument" without it (lab.md).
        opts.insert(0, "-Djava.net.preferIPv4Stack=true")
    header = f"# {MANAGED_HEADER} (deploy --mode={mode.name}): replaced on every deploy.\n"
    if layout.package == "tomcat":
        return (header + f'JAVA_OPTS="$JAVA_OPTS {" ".join(opts)}"\n').encode()
    return (header + f'CATALINA_OPTS="$CATALINA_OPTS {" ".join(opts)}"\n').encode()


def cluster_spec(inv: Inventory, host: Host, layout: Layout, key: str = "") -> serverxml.ClusterSpec:
    d = inv.delta
    peers = tuple((t.address, t.jvm_route) for t in inv.tomcats if t.name != host.name)
    return serverxml.ClusterSpec(
        tomcat_major=layout.major, address=host.address, jvm_route=host.jvm_route,
        manager=d.manager, membership="multicast" if uses_multicast(d.membership) else "static",
        peers=peers if d.membership != "multicast" else (), bridge=d.membership.startswith("bridge-"),
        multicast_address=d.multicast_address, multicast_port=d.multicast_port,
        receiver_port=d.receiver_port, channel_send_options=d.channel_send_options,
        state_transfer_timeout=d.state_transfer_timeout, encrypt_key=key if d.encrypt else "")


def plan_server_xml(inv: Inventory, host: Host, layout: Layout, data: bytes, mode: Mode, source: str,
                    key: str = "") -> bytes:
    """The mode's server.xml; the other mode's managed parts taken out first. In both modes the
    HTTP Connector listens on the node's own address and the shutdown port is off or on loopback,
    and with [tls] a RemoteIpValve trusts nginx's X-Forwarded-Proto and -For."""
    data = serverxml.patch_listeners(data, host.address, host.http_port, source)
    # msm non-sticky: one request per session at a time in each Tomcat (serverxml.patch_session_valve)
    data = serverxml.patch_session_valve(data, bool(mode.memcached and not inv.msm.sticky), source)
    # behind nginx's HTTPS ([tls]): the scheme and the client's address from nginx, and from no one else
    data = serverxml.patch_remote_ip(data, inv.nginx.address if inv.tls else None, source)
    if mode.cluster:
        return serverxml.patch_server_xml(serverxml.patch_engine_route(data, None, source),
                                          cluster_spec(inv, host, layout, key), source)
    return serverxml.patch_engine_route(serverxml.patch_server_xml(data, None, source),
                                        mode.jvm_route(inv, host), source)


def _plan_contexts(inv: Inventory, host: Host, layout: Layout, files: dict, mode: Mode) -> dict[str, bytes | None]:
    """The MSM Manager in the test application's Context (scope app) or in conf/context.xml
    (scope global), and nowhere else; in delta mode, in neither."""
    spec = msm.manager_spec(inv.tomcats.index(host), inv.tomcats, inv.msm, str(inv.path)) if mode.memcached else None
    out = {}
    for path, wanted in ((layout.app_context, spec if inv.msm.scope == "app" else None),
                         (layout.context_xml, spec if inv.msm.scope == "global" else None)):
        fact = _file(files, path)
        if fact.content is not None:
            out[path] = msm.patch_context(fact.content, wanted, f"{host.name}:{path}")
        elif wanted is not None:
            out[path] = msm.render_app_context(wanted)
    # the session cookie's SameSite ([app] same_site): a CookieProcessor in conf/context.xml
    same_site = inv.app.same_site or None
    context = out.get(layout.context_xml, _file(files, layout.context_xml).content)
    if context is not None:
        out[layout.context_xml] = cookies.patch_context_cookies(context, same_site, f"{host.name}:{layout.context_xml}")
    elif same_site is not None:
        raise TcsessionError(f"{host.name}:{layout.context_xml}: missing, so [app] same_site has nowhere to go; "
                             f"reinstall {layout.package} or restore the file (tcsession changed nothing)")
    # the jars scanned at start ([app] jar_scan = "listed"): a JarScanner in conf/context.xml
    jars_to_scan = inv.app.jars_to_scan if inv.app.jar_scan == "listed" else None
    context = out.get(layout.context_xml, _file(files, layout.context_xml).content)
    if context is not None:
        out[layout.context_xml] = jarscan.patch_context_jar_scan(context, jars_to_scan, f"{host.name}:{layout.context_xml}")
    elif jars_to_scan is not None:
        raise TcsessionError(f"{host.name}:{layout.context_xml}: missing, so [app] jar_scan has nowhere to go; "
                             f"reinstall {layout.package} or restore the file (tcsession changed nothing)")
    return out


def msm_family_jars(layout: Layout, files: dict) -> dict[str, FileFact]:
    """The jars of MSM's family (any version) in this Tomcat's lib, by path."""
    return {p: f for p, f in files.items() if p.startswith(layout.lib + "/") and f.content is not None
            and MANAGED_JAR.match(p[len(layout.lib) + 1:])}


def render_jar_list(jars: dict[str, bytes]) -> bytes:
    lines = [f"# {MANAGED_HEADER}: the memcached-session-manager jars it placed (sha256, path)."]
    lines += [f"{sha256(data)}  {path}" for path, data in sorted(jars.items())]
    return ("\n".join(lines) + "\n").encode()


def _plan_jars(layout: Layout, files: dict, jars: tuple) -> dict[str, bytes | None]:
    """Jar path -> bytes (None: remove). In msm mode (`jars` given) every other jar of MSM's
    family goes (older versions, another serializer's, copies left by hand); leaving msm mode
    removes the jars tcsession placed."""
    present = set(msm_family_jars(layout, files))
    want = {f"{layout.lib}/{j.name}": j.data for j in jars}
    placed = state.parse_jar_list(_file(files, state.JARS_LIST).content)
    gone = present - set(want) if jars else present & set(placed)
    out: dict[str, bytes | None] = dict(want)
    out.update({p: None for p in sorted(gone)})
    out[state.JARS_LIST] = render_jar_list(want) if jars else None
    return out


class HostChanges:
    """What one host needs: its file changes and whether (and why) its services restart."""

    def __init__(self, host: Host, files: tuple[FileChange, ...], unit: str, digest: str, restart: str = "",
                 memcached: str = "", memcached_digest: str = "", layout: Layout | None = None,
                 deferred: tuple[FileChange, ...] = (), app_contexts: tuple[str, ...] = (),
                 firewall: str = "", firewall_remove: bool = False):
        self.host, self.files, self.unit, self.digest = host, files, unit, digest
        # the firewall's rules: why they are (re)loaded, or removed ("" when neither)
        self.firewall, self.firewall_remove = firewall, firewall_remove
        self.restart, self.memcached, self.memcached_digest, self.layout = restart, memcached, memcached_digest, layout
        # the applications' files (WARs, context descriptors): written while the node is out of
        # service and stopped, inside its restart, so that no two nodes redeploy at once
        self.deferred, self.app_contexts = deferred, app_contexts


def _restart_reason(changed: bool, facts: HostFacts, unit: str, digest: str) -> str:
    if changed:
        return "its configuration changes"
    if facts.active.get(unit) != "active":
        return f"{unit} is not running"
    if facts.applied(unit) != digest:
        return "it last started with another configuration (a deploy stopped before restarting it)"
    return ""


def plan_apps(inv: Inventory, host: Host, layout: Layout, files: dict, mode: Mode,
              wars: tuple) -> tuple[FileChange, ...]:
    """Each application's WAR in webapps and, in msm mode with scope "app", its context
    descriptor with the Manager (a file tcsession owns; the WAR is never edited). Elsewhere the
    descriptor is removed (delta mode, or scope "global": conf/context.xml has the Manager)."""
    spec = (msm.manager_spec(inv.tomcats.index(host), inv.tomcats, inv.msm, str(inv.path))
            if mode.memcached and inv.msm.scope == "app" else None)
    out = []
    for w in wars:
        out.append(_change(_file(files, applications.war_path(layout, w.app)), w.data, "644", "root:root"))
        ctx = _file(files, applications.context_path(layout, w.app))
        out.append(_change(ctx, msm.render_app_context(spec) if spec else None, "644", "root:root"))
    return tuple(c for c in out if c is not None)


def test_page_after(inv: Inventory, fact: FileFact) -> bytes | None:
    """The test page with `[app] test_page`; without it, none: a page tcsession placed is removed
    (its bytes saved: rollback puts it back), a page of the operator's at that path is kept."""
    if inv.app.test_page:
        return webapp.render_test_jsp()
    if fact.content is not None and not webapp.is_our_test_page(fact.content):
        return fact.content
    return None


def tomcat_changes(inv: Inventory, host: Host, facts: HostFacts, mode: Mode, jars: tuple = (),
                   wars: tuple = (), key: str = "") -> HostChanges:
    layout = facts.tomcat
    if layout is None:
        raise TcsessionError(f"{host.name}: no Tomcat installed (install step did not run?)")
    files = facts.files
    server = files.get(layout.server_xml)
    if server is None or server.content is None:
        raise TcsessionError(f"{host.name}:{layout.server_xml}: missing; reinstall {layout.package} "
                             "or restore the file (tcsession changed nothing)")
    new_server = plan_server_xml(inv, host, layout, server.content, mode, f"{host.name}:{layout.server_xml}", key)
    web_fact = _file(files, layout.web_xml)
    new_web = (webapp.patch_web_xml(web_fact.content, f"{host.name}:{layout.web_xml}")
               if web_fact.content is not None else webapp.render_web_xml(layout.major))
    after: dict[str, bytes | None] = {
        layout.server_xml: new_server,
        layout.jvm_options: render_jvm_options(layout, host, mode),
        layout.web_xml: new_web,
    }
    after.update(_plan_contexts(inv, host, layout, files, mode))
    after.update(_plan_jars(layout, files, jars if mode.memcached else ()))
    changes = []
    for path, content in after.items():
        fact = _file(files, path)
        if path == layout.server_xml:
            mode_, owner = server.mode, server.owner
        elif path.endswith("web.xml") or path in (layout.context_xml, layout.app_context):
            mode_, owner = fact.mode or "644", fact.owner or "root:root"
        else:
            mode_, owner = "644", "root:root"
        changes.append(_change(fact, content, mode_, owner))
    tomcat_changed = any(c is not None for c in changes)
    changes.append(_change(_file(files, layout.test_page), test_page_after(inv, _file(files, layout.test_page)),
                           "644", "root:root"))
    memcached_reason, memcached_digest = "", ""
    if mode.memcached and host.memcached:
        conf_path = msm.memcached_conf_path(facts.package_manager)
        conf = _file(files, conf_path)
        new_conf = msm.render_memcached_conf(facts.package_manager, conf.content or b"", host.name, host.address,
                                             inv.msm.memcached_port, inv.msm.memcached_localhost)
        conf_change = _change(conf, new_conf, conf.mode or "644", conf.owner or "root:root")
        changes.append(conf_change)
        memcached_digest = config_digest({conf_path: new_conf})
        memcached_reason = _restart_reason(conf_change is not None, facts, "memcached", memcached_digest)
    # The page itself is recompiled by Jasper on change; everything else needs a restart, and
    # so does a Tomcat started before its configuration last changed (a deploy stopped halfway).
    config = {p: (after[p] if p in after else _file(files, p).content) for p in tomcat_config_paths(layout)}
    digest = config_digest(config)
    watched = tuple(c for c in changes if c is not None and applications.watched_by_tomcat(layout, c.path))
    changes = [c for c in changes if c not in watched]
    deferred = watched + plan_apps(inv, host, layout, files, mode, wars)
    reason = _restart_reason(tomcat_changed, facts, layout.unit, digest)
    if deferred and not reason:  # only applications' files (the others make tomcat_changed)
        reason = "its applications change: " + ", ".join(sorted({
            next(w.app.context for w in wars if c.path.endswith(("/" + w.app.base_name + ".war",
                                                                 "/" + w.app.base_name + ".xml")))
            for c in deferred}))
    fw_changes, fw_reason, fw_remove = plan_firewall(inv, host, facts, mode)
    changes += fw_changes
    changes += plan_hold(inv, host, facts, mode)
    return HostChanges(host, tuple(c for c in changes if c is not None), layout.unit, digest, reason,
                       memcached_reason, memcached_digest, layout, deferred, tuple(w.app.context for w in wars),
                       fw_reason, fw_remove)


def plan_firewall(inv: Inventory, host: Host, facts: HostFacts, mode: Mode) -> tuple[list, str, bool]:
    """The firewall's files (tcsession.firewall), and why its rules are loaded or removed: with
    `[firewall] backend = "nftables"` the rules for this mode; without it, tcsession's files from
    an earlier deploy removed (their bytes saved: rollback puts them back)."""
    files = facts.files
    wanted = inv.firewall == "nftables"
    after = {firewall_rules.RULES: firewall_rules.render_rules(inv, host, mode) if wanted else None,
             firewall_rules.UNIT_FILE: firewall_rules.render_unit() if wanted else None}
    changes = [_change(_file(files, p), data, "644", "root:root") for p, data in after.items()]
    changed = any(c is not None for c in changes)
    active = facts.active.get(firewall_rules.UNIT) == "active"
    if wanted:
        reason = "its rules change" if changed else "" if active else f"{firewall_rules.UNIT} is not running"
        return changes, reason, False
    return changes, ("[firewall] backend is none: tcsession's rules removed" if changed or active else ""), True


def plan_hold(inv: Inventory, host: Host, facts: HostFacts, mode: Mode) -> list[FileChange | None]:
    """`[packages] automatic = "hold"` on a Debian-family host: tcsession's files that keep the
    host's cluster packages out of unattended-upgrades and its cluster units out of needrestart's
    restarts (tcsession.unattended; the needrestart file only where needrestart is installed).
    With "warn", or on another family, tcsession's files from an earlier deploy are removed (their
    bytes saved: rollback puts them back). Neither restarts anything."""
    hold = inv.automatic == "hold" and facts.package_manager == "apt-get"
    memcached = host.role == "tomcat" and (bool(mode.memcached and host.memcached) or "memcached" in facts.packages)
    apt = unattended.render_apt_hold(unattended.patterns(host.role, memcached)) if hold else None
    units = unattended.units_for(host.role, facts.tomcat.unit if host.role == "tomcat" and facts.tomcat else None,
                                 memcached)
    restart = (unattended.render_needrestart(units) if hold and facts.automatic.needrestart and units else None)
    return [_change(_file(facts.files, unattended.APT_HOLD), apt, "644", "root:root"),
            _change(_file(facts.files, unattended.NEEDRESTART_CONF), restart, "644", "root:root")]


def nginx_config(package_manager: str | None) -> tuple[str, ...]:
    """What nginx reads that tcsession writes: a change reloads it."""
    return nginx.SITE, nginx.TLS_CERT, nginx.TLS_KEY, nginx.main_conf_path(package_manager)


def nginx_changes(inv: Inventory, host: Host, facts: HostFacts, mode: Mode,
                  tls_files: tuple[bytes, bytes] | None = None) -> HostChanges:
    """nginx's site and, with [tls], its certificate (full chain) and key (root-only): `tls_files`,
    read on this machine; without [tls], tcsession's certificate and key are removed (their bytes
    saved: rollback puts them back)."""
    backends = [nginx.Backend(t.name, t.address, t.http_port, t.jvm_route) for t in inv.tomcats]
    tls = (nginx.TlsSite(inv.tls.server_name, inv.tls.https_port, inv.tls.redirect_http, inv.tls.hsts)
           if inv.tls else None)
    if tls is not None and tls_files is None:
        raise TcsessionError(f"{inv.path}: [tls]: the certificate and key were not read (a bug: read them before "
                             "planning); tcsession changed nothing")
    site = nginx.render_site(backends, listen_port=host.http_port, routing=mode.routing(inv), tls=tls).encode()
    cert, key = tls_files if tls is not None else (None, None)
    main_path, main = nginx.main_conf_path(facts.package_manager), nginx.render_main(inv.rolling.drain_timeout).encode()
    files = facts.files
    changes = (_change(_file(files, nginx.SITE), site, "644", "root:root"),
               _change(_file(files, nginx.DEFAULT_SITE), None, "", ""),
               _change(_file(files, main_path), main, "644", "root:root"),
               _change(_file(files, nginx.TLS_CERT), cert, "644", "root:root"),
               _change(_file(files, nginx.TLS_KEY), key, "600", "root:root"))
    changes = tuple(c for c in changes if c is not None)
    digest = config_digest({nginx.SITE: site, nginx.TLS_CERT: cert, nginx.TLS_KEY: key, main_path: main})
    reason = _restart_reason(bool(changes), facts, "nginx", digest)
    # the hold files restart nothing: added after nginx's reason
    changes += tuple(c for c in plan_hold(inv, host, facts, mode) if c is not None)
    return HostChanges(host, changes, "nginx", digest, reason)


def packages_to_install(host: Host, facts: HostFacts, mode: Mode | str = "delta",
                        firewall: str = "none") -> tuple[str, ...]:
    """What a host is missing for its role (package names for its package manager)."""
    if host.role == "nginx":
        return () if "nginx" in facts.packages else ("nginx",)
    extra = () if "curl" in facts.packages else ("curl",)  # the health check on the host uses it
    if firewall == "nftables" and firewall_rules.PACKAGE not in facts.packages:
        extra += (firewall_rules.PACKAGE,)
    extra += tuple(p for p in mode_named(mode).packages(host) if p not in facts.packages)
    if facts.tomcat is not None:
        return extra
    for pkg in TOMCAT_PREFERENCE:
        if pkg in facts.available:
            return (pkg,) + extra
    raise TcsessionError(
        f"{host.name}: no Tomcat package available from {facts.package_manager or 'its package manager'} "
        f"(looked for {', '.join(TOMCAT_PREFERENCE)}); enable a repository that has one")


def predicted_major(host: Host, facts: HostFacts, install: tuple[str, ...]) -> int | None:
    """The Tomcat major a host has, or will have once `install` ran (None: known only then)."""
    if facts.tomcat is not None:
        return facts.tomcat.major
    for pkg in install:
        m = re.fullmatch(r"tomcat(\d+)", pkg)
        if m:
            return int(m.group(1))
    return None


def plan(inv: Inventory, facts: dict[str, HostFacts], mode: Mode | str, jars: dict[str, tuple] | None = None,
         deploy_id: str = "dry-run", time: str = "", before: dict[str, dict] | None = None,
         installed: dict[str, tuple[str, ...]] | None = None, wars: dict[str, tuple] | None = None,
         key: str = "", tls_files: tuple[bytes, bytes] | None = None) -> Plan:
    """The whole deploy as data.

    jars: host name -> the msm jars for its Tomcat (msm mode); wars: host name -> its applications'
    WARs (tcsession.apps.AppWar, checked on this machine); before: each host's services as they
    were before the deploy (its first facts; recorded for rollback); installed: what this deploy
    already installed on each host (recorded with the files)."""
    mode = mode_named(mode)
    inv = rollout.resolve_membership(inv, facts)[0]  # [delta] membership not set: decided from the facts
    before = before or {h.name: dict(facts[h.name].active) for h in inv.hosts}
    installs = {h.name: packages_to_install(h, facts[h.name], mode, inv.firewall) for h in inv.hosts}
    if any(installs.values()):
        # what the inventory and these first facts already refuse, refused before anything is installed
        retire(inv, facts, mode)
        if mode.cluster and inv.delta.encrypt:
            check_encryptable(inv, facts, installs)
        if mode.memcached:  # (memcached on no Tomcat, say)
            msm.manager_spec(0, inv.tomcats, inv.msm, str(inv.path))
        check_same_site(inv, facts, installs)
        check_jar_scan(inv, facts, installs)
        check_sessions(inv, facts, wars or {})
        tomcat_units = {pkg: unit for pkg, unit, *_ in TOMCAT_LAYOUTS}
        steps = [InstallPackages(h.name, "missing for its role", facts[h.name].package_manager, installs[h.name],
                                 manifest_for(deploy_id, mode.name, time, (), installs[h.name], before[h.name]),
                                 stop=tuple(tomcat_units[p] for p in installs[h.name] if p in tomcat_units))
                 for h in inv.hosts if installs[h.name]]
        return Plan(f"deploy {mode.name}", (*steps, Replan("all", "files come from the packages")))
    # Every host planned before any step: a refusal on one host changes nothing on any.
    if mode.cluster and inv.delta.encrypt:
        check_encryptable(inv, facts)
        if not key:
            raise TcsessionError(f"{inv.path}: [delta] encrypt = true but no cluster key was read (a bug)")
    if mode.cluster:
        check_encryption_switch(inv, facts, key if inv.delta.encrypt else None)
    check_same_site(inv, facts)
    check_jar_scan(inv, facts)
    retiring = retire(inv, facts, mode)
    hosts = {inv.nginx.name: nginx_changes(inv, inv.nginx, facts[inv.nginx.name], mode, tls_files)}
    for t in inv.tomcats:
        if inv.apps and t.name not in (wars or {}):
            raise TcsessionError(f"{t.name}: its applications were not checked for its Tomcat (a bug: "
                                 "prepare the WARs before planning); tcsession changed nothing")
        hosts[t.name] = tomcat_changes(inv, t, facts[t.name], mode, (jars or {}).get(t.name, ()),
                                       (wars or {}).get(t.name, ()), key)
    dropped = check_sessions(inv, facts, wars or {})  # sessions = "keep": refused here, before any change
    files: list = []
    for h in inv.hosts:
        c = hosts[h.name]
        deferred = getattr(c, "deferred", ())
        if c.files or deferred:
            files.append(WriteFiles(h.name, "differs from what the inventory asks", deploy_id,
                                    manifest_for(deploy_id, mode.name, time, c.files + deferred,
                                                 (installed or {}).get(h.name, ()), before[h.name]), c.files,
                                    deferred))
    for h, f in retiring:  # a Tomcat to stop: its services as they were, recorded first
        files.append(WriteFiles(h.name, "remove = true: taken out of the cluster", deploy_id,
                                manifest_for(deploy_id, mode.name, time, (), (), before.get(h.name, dict(f.active))), ()))
    services: dict[str, list] = {}
    for t in inv.tomcats:  # memcached first (MSM connects at start), one host at a time
        if hosts[t.name].memcached:
            services.setdefault(t.name, []).append(
                RestartMemcached(t.name, hosts[t.name].memcached, hosts[t.name].memcached_digest))
        if hosts[t.name].firewall:
            services.setdefault(t.name, []).append(
                ApplyFirewall(t.name, hosts[t.name].firewall, remove=hosts[t.name].firewall_remove))
    n = hosts[inv.nginx.name]
    site_change = next((c for c in n.files if c.path == nginx.SITE), None)
    site = site_change.after if site_change else facts[inv.nginx.name].content(nginx.SITE)
    running = {t.name for t in inv.tomcats if facts[t.name].active.get(hosts[t.name].unit) == "active"}
    # A Tomcat new to the site while others serve: nginx loads the site with it marked down, and
    # its own start (once it serves and, in delta mode, holds the sessions) puts it in service.
    # One its package started with the stock configuration is not serving the cluster: it is not
    # counted as running (no wave leans on it) until its restart in this plan.
    joining = (rollout.joining_nodes(inv, facts[inv.nginx.name].content(nginx.SITE), running,
                                     {t.name for t in inv.tomcats if hosts[t.name].restart})
               if site is not None and site_change is not None else [])
    nginx_steps = []
    if n.restart:
        out = [(inv.host(j).address, inv.host(j).http_port) for j in joining]
        nginx_steps.append(ApplyNginx(inv.nginx.name, n.restart + (f" ({', '.join(joining)} marked down until it has joined)"
                                                                   if joining else ""), n.digest,
                                      start=facts[inv.nginx.name].active.get("nginx") != "active",
                                      site=nginx.drain_all(site.decode(), out).encode() if joining else None,
                                      drain_timeout=inv.rolling.drain_timeout))
    retire_steps = [StopService(h.name, "remove = true: nginx no longer sends to it, the other Tomcats hold its sessions",
                                f.tomcat.unit) for h, f in retiring]
    restart = {t.name: hosts[t.name] for t in inv.tomcats if hosts[t.name].restart}
    p = rollout.rollout(inv, mode, f"deploy {mode.name}", facts, files, services, nginx_steps, retire_steps,
                        restart, site, {t.name: inv.app.test_page for t in inv.tomcats}, joining, rollout.DEPLOY)
    if dropped and not p.empty:  # sessions = "drop": each node says what it holds before anything changes
        # expected in the logs while versions mix: what changed, and what only one version has
        # (a node on another version logs ClassNotFoundException for it)
        classes = tuple(sorted({d.name for b in dropped for d in b.differences} | {c for b in dropped for c in b.one_sided}))
        p = Plan(p.kind, (*count_sessions(inv, facts, mode, dropped), *(
            dataclasses.replace(s, dropped=classes) if isinstance(s, RestartTomcat) else s for s in p.steps)))
    return p


@dataclasses.dataclass(frozen=True)
class SessionBreak:
    """An application's new version against the version some nodes run (`differences`: the classes
    whose sessions the other cannot read; empty: compatible)."""

    app: App
    hosts: tuple[str, ...]  # the nodes running that version
    old_sha256: str
    new_sha256: str
    differences: tuple[serialcompat.Difference, ...]
    compared: int = 0  # Serializable classes both versions have, compared
    one_sided: tuple[str, ...] = ()  # Serializable classes only one of the two has

    def summary(self) -> str:
        """One line for the deploy's progress."""
        what = (f"{self.compared} Serializable class(es) shared with the version {', '.join(self.hosts)} "
                f"run{'s' if len(self.hosts) == 1 else ''}")
        if not self.differences:
            return f"app {self.app.name}: {what}: same serialVersionUIDs, its sessions carry over"
        return (f"app {self.app.name}: {what}: {len(self.differences)} changed "
                f"({', '.join(d.name for d in self.differences[:3])}{' ...' if len(self.differences) > 3 else ''}); "
                f'sessions = "{self.app.sessions}"')

    def lines(self) -> list[str]:
        return [f"  {d.line()}; {_fix(d)}" for d in self.differences]


def _fix(d: serialcompat.Difference) -> str:
    if d.new is None and d.why.startswith("no longer"):
        return f"make {d.name} Serializable again"
    if d.old is None:
        return f"declare serialVersionUID as a constant in {d.name}"
    return f"declare private static final long serialVersionUID = {d.old}L; in {d.name}"


_COMPARED: dict[tuple[str, str], serialcompat.Comparison] = {}


def session_comparisons(inv: Inventory, facts: dict[str, HostFacts], wars: dict[str, tuple]) -> list[SessionBreak]:
    """Each application's WAR on each Tomcat (its recorded bytes) against the one it gets, per
    distinct pair: the shared Serializable classes whose serialVersionUID differs
    (tcsession.serialcompat; `differences` empty: compatible). Pure (cached by the pair's sha256)."""
    out = []
    for app in inv.apps:
        groups: dict[tuple[str, str], tuple[bytes, bytes, list[str]]] = {}
        for t in inv.tomcats:
            layout, new = facts[t.name].tomcat, next((w for w in wars.get(t.name, ()) if w.app.name == app.name), None)
            if layout is None or new is None:
                continue
            old = _file(facts[t.name].files, applications.war_path(layout, app)).content
            if old is None or old == new.data:
                continue
            key = (hashlib.sha256(old).hexdigest(), new.sha256)
            groups.setdefault(key, (old, new.data, []))[2].append(t.name)
        for key, (old, new, hosts) in groups.items():
            if key not in _COMPARED:
                _COMPARED[key] = serialcompat.compare_wars(old, new, f"[app.{app.name}] war {app.war}")
            c = _COMPARED[key]
            out.append(SessionBreak(app, tuple(hosts), key[0], key[1], c.differences, c.compared, c.one_sided))
    return out


def session_breaks(inv: Inventory, facts: dict[str, HostFacts], wars: dict[str, tuple]) -> list[SessionBreak]:
    """The comparisons that found a class the other version cannot read."""
    return [b for b in session_comparisons(inv, facts, wars) if b.differences]


def count_sessions(inv: Inventory, facts: dict[str, HostFacts], mode: Mode, dropped: list[SessionBreak]
                   ) -> list[CountSessions]:
    """One count per node running a version the new one cannot read (sessions = "drop")."""
    out = []
    for t in inv.tomcats:
        mine = [b for b in dropped if t.name in b.hosts]
        if not mine or facts[t.name].tomcat is None:
            continue
        out.append(CountSessions(
            t.name, "sessions = \"drop\"", facts[t.name].tomcat.unit, tuple(b.app.context for b in mine),
            tuple(sorted({d.name for b in mine for d in b.differences})),
            (t.address, inv.msm.memcached_port) if mode.memcached and t.memcached else None))
    return out


def check_sessions(inv: Inventory, facts: dict[str, HostFacts], wars: dict[str, tuple]) -> list[SessionBreak]:
    """Refuses (before any host changes) an application version that cannot read the sessions of
    the version the nodes run, unless its [app.NAME] says sessions = "drop"; returns the dropped."""
    breaks = session_breaks(inv, facts, wars)
    keep = [b for b in breaks if b.app.sessions == "keep"]
    if keep:
        lines = []
        for b in keep:
            n = len(b.differences)
            lines.append(f"[app.{b.app.name}] war {b.app.war}: {n} Serializable class{'es' if n > 1 else ''} "
                         f"changed serialVersionUID since the version {', '.join(b.hosts)} run{'s' if len(b.hosts) == 1 else ''} "
                         f"(sha256 {b.old_sha256[:12]} -> {b.new_sha256[:12]}): the new version could not read "
                         "their sessions, nor they its")
            lines += b.lines()
        names = ", ".join(f"[app.{b.app.name}]" for b in keep)
        lines.append(f"refusing the rollout: declare the old values (a field added under the same value is "
                     f"compatible), or set sessions = \"drop\" in {names} to roll it and lose the sessions the "
                     "nodes hold (tcsession changed nothing)")
        raise TcsessionError("\n".join(lines))
    return breaks


# EncryptInterceptor: usable with AES/GCM from 9.0.14; replay protection (a timestamp inside the
# ciphertext) from 9.0.119 / 10.1.56 / 11.0.23, whose messages the older ones cannot read.
ENCRYPT_FROM = {9: (9, 0, 14), 10: (10, 0, 0), 11: (11, 0, 0)}
REPLAY_FROM = {9: (9, 0, 119), 10: (10, 1, 56), 11: (11, 0, 23)}


def tomcat_version(facts: HostFacts, install: tuple[str, ...] = ()) -> tuple[int, ...] | None:
    """The installed Tomcat's upstream version ("10.1.60-1~deb12u1" -> (10, 1, 60)), or the version
    the Tomcat package in `install` would bring (its candidate, where the package manager says)."""
    layout = facts.tomcat
    if layout is not None:
        text = facts.packages.get(layout.package, "")
    else:
        text = next((facts.candidates.get(p, "") for p in install if re.fullmatch(r"tomcat\d*", p)), "")
    m = re.match(r"(?:\d+:)?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None


def check_same_site(inv: Inventory, facts: dict[str, HostFacts], installs: dict | None = None) -> None:
    """[app] same_site needs a Tomcat whose CookieProcessor has sameSiteCookies (8.5.42, 9.0.21
    and later; Tomcat 7 has no CookieProcessor). Before an install, judged by the candidate."""
    if not inv.app.same_site:
        return
    for t in inv.tomcats:
        install = (installs or {}).get(t.name, ())
        v = tomcat_version(facts[t.name], install)
        if v is None or v >= (9, 0, 21) or v[:2] == (8, 5) and v >= (8, 5, 42):
            continue
        shown = ".".join(map(str, v)) + ("" if facts[t.name].tomcat else " (the version its install would bring)")
        raise TcsessionError(f"{inv.path}: [app] same_site = {inv.app.same_site!r}: {t.name} runs Tomcat {shown}, "
                             "which cannot set SameSite (8.5.42, 9.0.21 or newer can); upgrade it or remove same_site")


def check_jar_scan(inv: Inventory, facts: dict[str, HostFacts], installs: dict | None = None) -> None:
    """[app] jar_scan = "listed" needs StandardJarScanFilter's default scans switchable (Tomcat 8 and later)."""
    if inv.app.jar_scan != "listed":
        return
    for t in inv.tomcats:
        v = tomcat_version(facts[t.name], (installs or {}).get(t.name, ()))
        if v is not None and v[0] < jarscan.SINCE_MAJOR:
            raise TcsessionError(f'{inv.path}: [app] jar_scan = "listed": {t.name} runs Tomcat '
                                 f"{'.'.join(map(str, v))}, whose jar scanner has no tldScan list (Tomcat 8 and "
                                 'later); upgrade it or remove jar_scan')


def check_encryptable(inv: Inventory, facts: dict[str, HostFacts], installs: dict | None = None) -> None:
    """Every Tomcat has an EncryptInterceptor with AES/GCM, and all are on the same side of the
    replay-protection change (a rolling change across it would split the cluster). Before an
    install (`installs`), a Tomcat to be installed is judged by its candidate version; one whose
    candidate is not known is judged once installed."""
    sides = {}
    for t in inv.tomcats:
        install = (installs or {}).get(t.name, ())
        v = tomcat_version(facts[t.name], install)
        if v is None and facts[t.name].tomcat is None and installs is not None:
            continue
        shown = ".".join(map(str, v)) if v else "unknown"
        if facts[t.name].tomcat is None:
            shown += " (the version its install would bring)"
        if v is None or v[0] not in ENCRYPT_FROM or v < ENCRYPT_FROM[v[0]]:
            raise TcsessionError(f"{inv.path}: [delta] encrypt = true: {t.name} runs Tomcat {shown}, which has no "
                                 f"EncryptInterceptor with AES/GCM (9.0.14 or newer); upgrade it or set encrypt = false")
        sides[t.name] = (v >= REPLAY_FROM[v[0]], shown)
    if len({s for s, _ in sides.values()}) > 1:
        listing = ", ".join(f"{n} {v}" for n, (_, v) in sides.items())
        raise TcsessionError(f"{inv.path}: [delta] encrypt = true: the Tomcats are on both sides of the replay-protection "
                             f"change (9.0.119 / 10.1.56 / 11.0.23), whose encrypted messages do not interoperate "
                             f"({listing}); upgrade them all to one side first")


def retire(inv: Inventory, facts: dict[str, HostFacts], mode: Mode) -> list[tuple[Host, HostFacts]]:
    """The Tomcats with `remove = true` that still run (those that did not answer have no facts):
    each is stopped (and disabled) once nginx's site without them is loaded, its services as they
    were recorded first, so rollback starts it again. (The site, and with static membership the
    peers' lists, leave them out already: they are not among inv.tomcats.)"""
    out = []
    for h in inv.removed:
        f = facts.get(h.name)
        if f is None or f.tomcat is None or f.active.get(f.tomcat.unit) != "active":
            continue
        if mode.memcached:
            raise TcsessionError(f"[tomcat.{h.name}] remove = true in msm mode: refused (its memcached holds "
                                 "sessions of the other Tomcats, and a Tomcat whose memcachedNodes leave its node "
                                 "out cannot load a session whose id names that node: they would be lost); keep "
                                 "the host, or delete its table in a maintenance window, accepting that loss; "
                                 "tcsession changed nothing")
        out.append((h, f))
    return out


def check_encryption_switch(inv: Inventory, facts: dict[str, HostFacts], planned: str | None) -> None:
    """Refuse to turn encryption on or off, or change its key, by a rolling restart of a running
    cluster when no running member already has the planned setting: a node restarted first could
    not read its peers' messages (nor they its), so it would get no sessions, and nginx would then
    send users to it. (One member already on the planned key, as after a node was given a wrong
    key, is what a rolling restart heals.)"""
    running = {t.name for t in inv.tomcats if facts[t.name].tomcat
               and facts[t.name].active.get(facts[t.name].tomcat.unit) == "active"}
    current = {n: c["encryption_key"] for n, c in rollout.running_clusters(inv, facts, running).items()}
    if len(current) >= 2 and planned not in current.values():
        what = ("turning [delta] encrypt on" if planned and all(v is None for v in current.values()) else
                "turning [delta] encrypt off" if planned is None else "changing the cluster key")
        names = ", ".join(sorted(current))
        raise TcsessionError(f"{inv.path}: {what} while {names} run would lose their sessions (a node restarted "
                             "with the new setting cannot read the others' messages, so it gets no sessions); "
                             "stop the Tomcats first in a maintenance window (sessions end), then deploy; "
                             "tcsession changed nothing")
