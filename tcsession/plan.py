"""Plans: what a deploy will change, as plain data computed from facts by pure code.

The dry run prints a Plan; the apply executes the same Plan; so the preview cannot disagree
with the run. Change detection is "did planning produce anything?": a host whose files,
packages and services already match produces an empty HostPlan.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib

from tcsession import nginx, serverxml, webapp
from tcsession.errors import TcsessionError
from tcsession.facts import TOMCAT_LAYOUTS, FileFact, HostFacts, tomcat_major
from tcsession.inventory import Host, Inventory

MANAGED_HEADER = "Managed by tcsession"

# The package to install when a Tomcat host has none, by preference. A host already running
# one of these keeps it.
TOMCAT_PREFERENCE = ("tomcat10", "tomcat9", "tomcat11", "tomcat")


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one Tomcat installation keeps things (see facts.TOMCAT_LAYOUTS)."""

    package: str
    unit: str
    conf: str
    base: str
    lib: str
    jvm_options: str  # the JVM options file the tool owns whole
    major: int

    @property
    def server_xml(self) -> str:
        return f"{self.conf}/server.xml"

    @property
    def context_xml(self) -> str:
        return f"{self.conf}/context.xml"

    @property
    def webapp(self) -> str:
        return f"{self.base}/webapps/ROOT"


def layout_for(package: str, version: str) -> Layout:
    for pkg, unit, conf, base, lib, jvm in TOMCAT_LAYOUTS:
        if pkg == package:
            major = tomcat_major(version)
            if major is None:
                raise TcsessionError(f"cannot read a Tomcat major version from {package} {version}")
            if pkg == "tomcat":  # RHEL family: /etc/tomcat/conf.d/*.conf is read at start
                jvm = "/etc/tomcat/conf.d/tcsession.conf"
            else:  # Debian family: catalina.sh sources CATALINA_BASE/bin/setenv.sh
                jvm = f"{base}/bin/setenv.sh"
            return Layout(pkg, unit, conf, base, lib, jvm, major)
    raise TcsessionError(f"unknown Tomcat package {package!r}")


def installed_tomcat(facts: HostFacts) -> Layout | None:
    for pkg, *_ in TOMCAT_LAYOUTS:
        if pkg in facts.packages:
            return layout_for(pkg, facts.packages[pkg])
    return None


# Every file a Tomcat or nginx host might have that planning reads, whatever the layout.
def files_to_read() -> list[str]:
    paths = []
    for pkg, unit, conf, base, lib, jvm in TOMCAT_LAYOUTS:
        lay = layout_for(pkg, "0.0")
        paths += [lay.server_xml, lay.jvm_options, f"{lay.webapp}/WEB-INF/web.xml",
                  f"{lay.webapp}/test.jsp"]
    paths += [NGINX_SITE, NGINX_DEFAULT_SITE, applied_path("nginx")]
    paths += [applied_path(unit) for _, unit, *_ in TOMCAT_LAYOUTS]
    return paths


APPLIED_DIR = "/var/lib/tcsession/applied"


def applied_path(unit: str) -> str:
    """Written after a service was (re)started or reloaded successfully with a configuration:
    a service whose stamp differs from its files was not restarted (a deploy stopped halfway)."""
    return f"{APPLIED_DIR}/{unit}"


def config_digest(files: dict[str, bytes | None]) -> str:
    """Of the files a service reads at start (None: the file does not exist)."""
    h = hashlib.sha256()
    for path in sorted(files):
        content = files[path]
        h.update(path.encode() + b"\0" + (hashlib.sha256(content).digest() if content is not None else b"-"))
    return h.hexdigest()


def tomcat_config_paths(layout: Layout) -> tuple[str, ...]:
    """What a Tomcat restart is owed for when it changes (the test page is recompiled alone)."""
    return (layout.server_xml, layout.jvm_options, f"{layout.webapp}/WEB-INF/web.xml")


def applied_digest(facts: HostFacts, unit: str) -> str | None:
    fact = facts.files.get(applied_path(unit))
    return fact.content.decode().strip() if fact and fact.content is not None else None


NGINX_SITE = "/etc/nginx/conf.d/tcsession.conf"
NGINX_DEFAULT_SITE = "/etc/nginx/sites-enabled/default"


@dataclasses.dataclass(frozen=True)
class FileChange:
    path: str
    before: bytes | None  # None: did not exist
    after: bytes | None  # None: remove
    mode: str  # octal string for the new file
    owner: str  # user:group for the new file
    before_mode: str = ""
    before_owner: str = ""
    before_link: str | None = None  # the file was a symlink to this target
    after_link: str | None = None  # make it a symlink to this target (rollback of a removal)

    def diff(self) -> str:
        a = (self.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
        b = (self.after or b"").decode("utf-8", "replace").splitlines(keepends=True)
        if self.after_link is not None:
            b = [f"symlink -> {self.after_link}\n"]
        if self.before_link is not None:
            a = [f"symlink -> {self.before_link}\n"]
        lines = difflib.unified_diff(a, b, fromfile=f"{self.path}\t(now)" if self.before is not None
                                     or self.before_link else "/dev/null",
                                     tofile=self.path if self.after is not None or self.after_link
                                     else "/dev/null")
        out = "".join(lines)
        if not out and self.mode != self.before_mode:
            out = f"mode {self.before_mode} -> {self.mode}\n"
        return out


@dataclasses.dataclass(frozen=True)
class HostPlan:
    host: str
    role: str
    files: tuple[FileChange, ...] = ()
    restart: bool = False  # restart (or start) the host's main service after the files
    service: str = ""  # that service's unit
    enable: tuple[str, ...] = ()  # units to enable and start if not active
    digest: str = ""  # of the configuration the service runs with once this plan is applied

    @property
    def empty(self) -> bool:
        return not self.files and not self.restart and not self.enable


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: str
    hosts: tuple[HostPlan, ...]

    @property
    def empty(self) -> bool:
        return all(h.empty for h in self.hosts)

    def host(self, name: str) -> HostPlan:
        return next(h for h in self.hosts if h.host == name)


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


def render_jvm_options(layout: Layout, host: Host, mode: str) -> bytes:
    opts = [f"-D{webapp.NODE_PROPERTY}={host.name}"]
    if mode == "delta":
        # McastService bind=<address> fails with "Invalid argument" without it (lab.md).
        opts.insert(0, "-Djava.net.preferIPv4Stack=true")
    header = f"# {MANAGED_HEADER} (deploy --mode={mode}): replaced on every deploy.\n"
    if layout.package == "tomcat":
        return (header + f'JAVA_OPTS="$JAVA_OPTS {" ".join(opts)}"\n').encode()
    return (header + f'CATALINA_OPTS="$CATALINA_OPTS {" ".join(opts)}"\n').encode()


def cluster_spec(inv: Inventory, host: Host, layout: Layout) -> serverxml.ClusterSpec:
    d = inv.delta
    peers = tuple((t.address, t.jvm_route) for t in inv.tomcats if t.name != host.name)
    return serverxml.ClusterSpec(
        tomcat_major=layout.major, address=host.address, jvm_route=host.jvm_route,
        manager=d.manager, membership=d.membership,
        peers=peers if d.membership == "static" else (),
        multicast_address=d.multicast_address, multicast_port=d.multicast_port,
        receiver_port=d.receiver_port, channel_send_options=d.channel_send_options,
        state_transfer_timeout=d.state_transfer_timeout)


def plan_tomcat(inv: Inventory, host: Host, facts: HostFacts, mode: str) -> HostPlan:
    layout = installed_tomcat(facts)
    if layout is None:
        raise TcsessionError(f"{host.name}: no Tomcat installed (install step did not run?)")
    files = facts.files
    server = files.get(layout.server_xml)
    if server is None or server.content is None:
        raise TcsessionError(f"{host.name}:{layout.server_xml}: missing; reinstall {layout.package} "
                             "or restore the file (tcsession changed nothing)")
    source = f"{host.name}:{layout.server_xml}"
    new_server = serverxml.patch_server_xml(server.content, cluster_spec(inv, host, layout), source)
    web_xml_path = f"{layout.webapp}/WEB-INF/web.xml"
    web_fact = files.get(web_xml_path, FileFact(web_xml_path, None))
    new_web = (webapp.patch_web_xml(web_fact.content, f"{host.name}:{web_xml_path}")
               if web_fact.content is not None else webapp.render_web_xml(layout.major))
    jsp_path = f"{layout.webapp}/test.jsp"
    changes = [
        _change(server, new_server, server.mode, server.owner),
        _change(files.get(layout.jvm_options, FileFact(layout.jvm_options, None)),
                render_jvm_options(layout, host, mode), "644", "root:root"),
        _change(web_fact, new_web, web_fact.mode or "644", web_fact.owner or "root:root"),
        _change(files.get(jsp_path, FileFact(jsp_path, None)), webapp.render_test_jsp(),
                "644", "root:root"),
    ]
    changes = tuple(c for c in changes if c is not None)
    # The page itself is recompiled by Jasper on change; everything else needs a restart, and
    # so does a Tomcat started before its configuration last changed (a deploy stopped halfway).
    config = dict(zip(tomcat_config_paths(layout),
                      (new_server, render_jvm_options(layout, host, mode), new_web)))
    digest = config_digest(config)
    needs_restart = (any(c.path != jsp_path for c in changes) or facts.active.get(layout.unit) != "active"
                     or applied_digest(facts, layout.unit) != digest)
    return HostPlan(host.name, "tomcat", changes, needs_restart, layout.unit, digest=digest)


def plan_nginx(inv: Inventory, host: Host, facts: HostFacts, routing: str = "jvmroute") -> HostPlan:
    backends = [nginx.Backend(t.name, t.address, t.http_port, t.jvm_route) for t in inv.tomcats]
    site = nginx.render_site(backends, listen_port=host.http_port, routing=routing).encode()
    files = facts.files
    changes = [
        _change(files.get(NGINX_SITE, FileFact(NGINX_SITE, None)), site, "644", "root:root"),
        # Debian's default site also claims `listen 80 default_server`: nginx -t would fail.
        _change(files.get(NGINX_DEFAULT_SITE, FileFact(NGINX_DEFAULT_SITE, None)), None, "", ""),
    ]
    changes = tuple(c for c in changes if c is not None)
    digest = config_digest({NGINX_SITE: site})
    needs = (bool(changes) or facts.active.get("nginx") != "active"
             or applied_digest(facts, "nginx") != digest)
    return HostPlan(host.name, "nginx", changes, needs, "nginx", digest=digest)


def packages_to_install(host: Host, facts: HostFacts) -> tuple[str, ...]:
    """What a host is missing for its role (package names for its package manager)."""
    if host.role == "nginx":
        return () if "nginx" in facts.packages else ("nginx",)
    extra = () if "curl" in facts.packages else ("curl",)  # the health check on the host uses it
    if installed_tomcat(facts) is not None:
        return extra
    for pkg in TOMCAT_PREFERENCE:
        if pkg in facts.available:
            return (pkg,) + extra
    raise TcsessionError(
        f"{host.name}: no Tomcat package available from {facts.package_manager or 'its package manager'} "
        f"(looked for {', '.join(TOMCAT_PREFERENCE)}); enable a repository that has one")


def plan_delta(inv: Inventory, facts: dict[str, HostFacts]) -> Plan:
    hosts = [plan_nginx(inv, inv.nginx, facts[inv.nginx.name])]
    hosts += [plan_tomcat(inv, t, facts[t.name], "delta") for t in inv.tomcats]
    return Plan("delta", tuple(hosts))
