"""Plans: what a deploy will change, as plain data computed from facts by pure code.

The dry run prints a Plan; the apply executes the same Plan; so the preview cannot disagree
with the run. Change detection is "did planning produce anything?": a host whose files,
packages and services already match produces an empty HostPlan.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re

from tcsession import msm, nginx, serverxml, webapp
from tcsession.msmjars import MANAGED_JAR, MANAGED_JAR_GLOBS
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

    @property
    def app_context(self) -> str:
        return f"{self.webapp}/META-INF/context.xml"


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
                  f"{lay.webapp}/test.jsp", lay.context_xml, lay.app_context]
    paths += [NGINX_SITE, NGINX_DEFAULT_SITE, applied_path("nginx")]
    paths += [applied_path(unit) for _, unit, *_ in TOMCAT_LAYOUTS]
    paths += [*MEMCACHED_CONF.values(), applied_path("memcached"), JARS_LIST]
    return sorted(set(paths), key=paths.index)


def jars_script() -> str:
    """Shell printing every jar of MSM's family in each layout's lib directory (regular files
    only, in the files_script format), whatever its version: planning removes stale ones."""
    libs = " ".join(sorted({lib for *_, lib, _ in TOMCAT_LAYOUTS}))
    globs = "|".join(MANAGED_JAR_GLOBS)
    return (f"for d in {libs}; do for f in \"$d\"/*.jar; do case \"${{f##*/}}\" in {globs}) "
            "if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then echo \"@@file $f $(stat -c '%a %U:%G' \"$f\")\"; "
            "base64 -w0 \"$f\"; echo; fi;; esac; done; done\n")


# The jars tcsession placed in Tomcat's lib ("<sha256>  <path>" lines): leaving msm mode
# removes exactly these.
JARS_LIST = "/var/lib/tcsession/msm-jars"
MEMCACHED_CONF = {"apt-get": "/etc/memcached.conf", "dnf": "/etc/sysconfig/memcached",
                  "yum": "/etc/sysconfig/memcached"}


def memcached_conf_path(package_manager: str | None) -> str:
    return MEMCACHED_CONF.get(package_manager or "", "/etc/memcached.conf")


def render_memcached_conf(package_manager: str | None, existing: bytes, host: Host, port: int,
                          localhost: bool = False) -> bytes:
    path = memcached_conf_path(package_manager)
    source = f"{host.name}:{path}"
    listen = (host.address, "127.0.0.1") if localhost else (host.address,)
    if path == "/etc/memcached.conf":
        return msm.render_memcached_conf_debian(existing, listen, port, source)
    return msm.render_memcached_sysconfig(existing, listen, port, source)


def parse_jar_list(fact: FileFact | None) -> dict[str, str]:
    """path -> sha256 of the jars a deploy placed."""
    if fact is None or fact.content is None:
        return {}
    out = {}
    for line in fact.content.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            out[parts[1]] = parts[0]
    return out


def render_jar_list(jars: dict[str, bytes]) -> bytes:
    lines = [f"# {MANAGED_HEADER}: the memcached-session-manager jars it placed (sha256, path)."]
    lines += [f"{sha256(data)}  {path}" for path, data in sorted(jars.items())]
    return ("\n".join(lines) + "\n").encode()


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
        if content is not None:  # an absent file adds nothing (so a new path to read changes no stamp)
            h.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest()


def tomcat_config_paths(layout: Layout) -> tuple[str, ...]:
    """What a Tomcat restart is owed for when it changes (the test page is recompiled alone);
    the jar list carries the placed jars' checksums."""
    return (layout.server_xml, layout.jvm_options, f"{layout.webapp}/WEB-INF/web.xml",
            layout.context_xml, layout.app_context, JARS_LIST)


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
        if self.path.endswith(".jar"):
            return (f"binary {self.path}: sha256 {sha256(self.before) or '(none)'} -> "
                    f"{sha256(self.after) or '(removed)'}\n")
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
    memcached: bool = False  # restart (or start) memcached, before the Tomcat
    memcached_digest: str = ""

    @property
    def empty(self) -> bool:
        return not self.files and not self.restart and not self.enable and not self.memcached


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


def _file(files: dict, path: str) -> FileFact:
    return files.get(path) or FileFact(path, None)


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


def plan_server_xml(inv: Inventory, host: Host, layout: Layout, data: bytes, mode: str, source: str) -> bytes:
    """The mode's server.xml; the other mode's managed parts taken out first."""
    if mode == "delta":
        return serverxml.patch_server_xml(serverxml.patch_engine_route(data, None, source),
                                          cluster_spec(inv, host, layout), source)
    route = host.jvm_route if inv.msm.sticky else None  # non-sticky MSM: no jvmRoute
    return serverxml.patch_engine_route(serverxml.patch_server_xml(data, None, source), route, source)


def _plan_contexts(inv: Inventory, host: Host, layout: Layout, files: dict, mode: str) -> dict[str, bytes | None]:
    """The MSM Manager in the test application's Context (scope app) or in conf/context.xml
    (scope global), and nowhere else; in delta mode, in neither."""
    spec = msm.manager_spec(inv.tomcats.index(host), inv.tomcats, inv.msm) if mode == "msm" else None
    out = {}
    for path, wanted in ((layout.app_context, spec if inv.msm.scope == "app" else None),
                         (layout.context_xml, spec if inv.msm.scope == "global" else None)):
        fact = _file(files, path)
        if fact.content is not None:
            out[path] = msm.patch_context(fact.content, wanted, f"{host.name}:{path}")
        elif wanted is not None:
            out[path] = msm.render_app_context(wanted)
    return out


def msm_family_jars(layout: Layout, files: dict) -> dict[str, FileFact]:
    """The jars of MSM's family (any version) in this Tomcat's lib, by path."""
    return {p: f for p, f in files.items() if p.startswith(layout.lib + "/") and f.content is not None
            and MANAGED_JAR.match(p[len(layout.lib) + 1:])}


def _plan_jars(layout: Layout, files: dict, jars: tuple) -> dict[str, bytes | None]:
    """Jar path -> bytes (None: remove). In msm mode (`jars` given) every other jar of MSM's
    family goes (older versions, another serializer's, copies left by hand); leaving msm mode
    removes the jars tcsession placed."""
    present = set(msm_family_jars(layout, files))
    want = {f"{layout.lib}/{j.name}": j.data for j in jars}
    gone = present - set(want) if jars else present & set(parse_jar_list(files.get(JARS_LIST)))
    out: dict[str, bytes | None] = dict(want)
    out.update({p: None for p in sorted(gone)})
    out[JARS_LIST] = render_jar_list(want) if jars else None
    return out


def plan_tomcat(inv: Inventory, host: Host, facts: HostFacts, mode: str, jars: tuple = ()) -> HostPlan:
    layout = installed_tomcat(facts)
    if layout is None:
        raise TcsessionError(f"{host.name}: no Tomcat installed (install step did not run?)")
    files = facts.files
    server = files.get(layout.server_xml)
    if server is None or server.content is None:
        raise TcsessionError(f"{host.name}:{layout.server_xml}: missing; reinstall {layout.package} "
                             "or restore the file (tcsession changed nothing)")
    new_server = plan_server_xml(inv, host, layout, server.content, mode, f"{host.name}:{layout.server_xml}")
    web_xml_path = f"{layout.webapp}/WEB-INF/web.xml"
    web_fact = _file(files, web_xml_path)
    new_web = (webapp.patch_web_xml(web_fact.content, f"{host.name}:{web_xml_path}")
               if web_fact.content is not None else webapp.render_web_xml(layout.major))
    jsp_path = f"{layout.webapp}/test.jsp"
    after: dict[str, bytes | None] = {
        layout.server_xml: new_server,
        layout.jvm_options: render_jvm_options(layout, host, mode),
        web_xml_path: new_web,
    }
    after.update(_plan_contexts(inv, host, layout, files, mode))
    after.update(_plan_jars(layout, files, jars if mode == "msm" else ()))
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
    changes.append(_change(_file(files, jsp_path), webapp.render_test_jsp(), "644", "root:root"))
    memcached_restart, memcached_digest = False, ""
    if mode == "msm" and host.memcached:
        conf_path = memcached_conf_path(facts.package_manager)
        conf = _file(files, conf_path)
        new_conf = render_memcached_conf(facts.package_manager, conf.content or b"", host, inv.msm.memcached_port,
                                         inv.msm.memcached_localhost)
        conf_change = _change(conf, new_conf, conf.mode or "644", conf.owner or "root:root")
        changes.append(conf_change)
        memcached_digest = config_digest({conf_path: new_conf})
        memcached_restart = (conf_change is not None or facts.active.get("memcached") != "active"
                             or applied_digest(facts, "memcached") != memcached_digest)
    changes = tuple(c for c in changes if c is not None)
    # The page itself is recompiled by Jasper on change; everything else needs a restart, and
    # so does a Tomcat started before its configuration last changed (a deploy stopped halfway).
    config = {p: (after[p] if p in after else _file(files, p).content) for p in tomcat_config_paths(layout)}
    digest = config_digest(config)
    needs_restart = (tomcat_changed or facts.active.get(layout.unit) != "active"
                     or applied_digest(facts, layout.unit) != digest)
    return HostPlan(host.name, "tomcat", changes, needs_restart, layout.unit, digest=digest,
                    memcached=memcached_restart, memcached_digest=memcached_digest)


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


def packages_to_install(host: Host, facts: HostFacts, mode: str = "delta") -> tuple[str, ...]:
    """What a host is missing for its role (package names for its package manager)."""
    if host.role == "nginx":
        return () if "nginx" in facts.packages else ("nginx",)
    extra = () if "curl" in facts.packages else ("curl",)  # the health check on the host uses it
    if mode == "msm" and host.memcached and "memcached" not in facts.packages:
        extra += ("memcached",)
    if installed_tomcat(facts) is not None:
        return extra
    for pkg in TOMCAT_PREFERENCE:
        if pkg in facts.available:
            return (pkg,) + extra
    raise TcsessionError(
        f"{host.name}: no Tomcat package available from {facts.package_manager or 'its package manager'} "
        f"(looked for {', '.join(TOMCAT_PREFERENCE)}); enable a repository that has one")


def plan_delta(inv: Inventory, facts: dict[str, HostFacts]) -> Plan:
    return plan(inv, facts, "delta")


def nginx_routing(inv: Inventory, mode: str) -> str:
    """By jvmRoute for the delta cluster and sticky MSM; round robin for non-sticky MSM."""
    return "roundrobin" if mode == "msm" and not inv.msm.sticky else "jvmroute"


def predicted_major(host: Host, facts: HostFacts, install: tuple[str, ...]) -> int | None:
    """The Tomcat major a host has, or will have once `install` ran (None: known only then)."""
    layout = installed_tomcat(facts)
    if layout is not None:
        return layout.major
    for pkg in install:
        m = re.fullmatch(r"tomcat(\d+)", pkg)
        if m:
            return int(m.group(1))
    return None


def plan(inv: Inventory, facts: dict[str, HostFacts], mode: str, jars: dict[str, tuple] | None = None) -> Plan:
    """The whole deploy as data. `jars`: host name -> the msm jars for its Tomcat (msm mode)."""
    hosts = [plan_nginx(inv, inv.nginx, facts[inv.nginx.name], nginx_routing(inv, mode))]
    hosts += [plan_tomcat(inv, t, facts[t.name], mode, (jars or {}).get(t.name, ())) for t in inv.tomcats]
    return Plan(mode, tuple(hosts))
