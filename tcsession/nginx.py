"""The nginx site in front of the Tomcats: a whole file tcsession owns (rendered, never patched).

Target: open-source nginx 1.18 to 1.22 (Debian 11/12, EPEL): no `sticky` directive (for
years part of the commercial subscription only), so session affinity is built from `map` +
one upstream per node:

- routing="jvmroute": `map $cookie_jsessionid` picks the upstream whose node matches the
  `.jvmRoute` suffix Tomcat appends to the session id (`<id>.tomcat1`, and with
  memcached-session-manager `<id>-n1.tomcat1`). That upstream lists its node first and every
  other node as `backup`, so a session goes to its own node while it is up and to the others
  when it is not. Requests without a session cookie (or with a route no node has) go to
  `tcs_all`, a round robin over every node. Only the cookie is looked at: a session id sent
  as a `;jsessionid=` path parameter (cookies disabled in the browser) is not routed by node.
  `proxy_pass http://$tcsession_backend` needs no `resolver`: nginx first looks a variable's
  value up among the configured upstream names (nginx.org proxy_pass documentation:
  "the name is searched among the described server groups, and, if not found, is determined
  using a resolver"; ngx_http_upstream_init_request compares names case-insensitively).
  For DeltaManager with JvmRouteBinderValve and for sticky memcached-session-manager.
- routing="roundrobin": one upstream with every node. For non-sticky memcached-session-manager.

Failover: `proxy_next_upstream error timeout http_502 http_503` retries another node when one
is down or answers 502/503 (nginx never retries POST/LOCK/PATCH once sent, which is right);
`proxy_connect_timeout 2s` notices a dead host quickly (the default is 60 s); and
`max_fails=1 fail_timeout=5s` takes a node out after one failure and tries it again after 5 s
(defaults: 1 and 10 s), so a restarted Tomcat gets its sessions' traffic back soon. No
keepalive to the Tomcats: every request opens a new connection, so nginx never reuses a
connection Tomcat has just closed (a POST on such a connection is answered 502, not retried).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Sequence

from tcsession.errors import TcsessionError

HEADER = "# Managed by tcsession: changes here are replaced on the next deploy."

ROUTINGS = ("jvmroute", "roundrobin")

#: The site file tcsession owns whole on the nginx host.
SITE = "/etc/nginx/conf.d/tcsession.conf"
#: Debian's default site also claims `listen 80 default_server` (nginx -t would fail): removed.
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"

#: Variable set by the map (nginx variables share one namespace: prefixed to avoid clashes).
BACKEND_VARIABLE = "$tcsession_backend"
#: Round-robin upstream over every node.
ALL_UPSTREAM = "tcs_all"
#: Per-node upstreams are named UPSTREAM_PREFIX + jvm_route: can never equal ALL_UPSTREAM.
UPSTREAM_PREFIX = "tcs_route_"

#: [tls]: the certificate (full chain) and its key on the nginx host (the key root-only, 0600).
TLS_DIR = "/etc/nginx/tcsession"
TLS_CERT = f"{TLS_DIR}/tls.crt"
TLS_KEY = f"{TLS_DIR}/tls.key"
#: Mozilla's "intermediate" TLS 1.2 ciphers (TLS 1.3's suites need no list).
#: The operator's own server-level settings (client_max_body_size, extra locations, headers):
#: `*.conf` files in this directory, included in every server block that serves the cluster.
#: tcsession never writes, reads or removes anything there.
OPERATOR_DIR = "/etc/nginx/tcsession.d"
#: nginx's main context (worker_shutdown_timeout is valid nowhere else): a file in the directory
#: each distribution's nginx.conf includes at the top level for dynamic modules.
MAIN_CONF = {"apt-get": "/etc/nginx/modules-enabled/tcsession-main.conf",
             "dnf": "/usr/share/nginx/modules/tcsession-main.conf",
             "yum": "/usr/share/nginx/modules/tcsession-main.conf"}
TLS_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
               "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
               "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384")

MAX_FAILS = 1
FAIL_TIMEOUT = "5s"
CONNECT_TIMEOUT = "2s"

_ROUTE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class Backend:
    """One Tomcat behind nginx: inventory name, HTTP connector address and port, jvmRoute."""

    name: str
    address: str
    port: int
    jvm_route: str | None = None


@dataclass(frozen=True)
class TlsSite:
    """HTTPS at nginx ([tls]): the name served, its port, whether plain HTTP redirects to it, and
    the Strict-Transport-Security max-age (0: not sent)."""

    server_name: str
    https_port: int = 443
    redirect_http: bool = True
    hsts: int = 0


def main_conf_path(package_manager: str | None) -> str:
    return MAIN_CONF.get(package_manager or "", MAIN_CONF["apt-get"])


def render_main(shutdown_timeout: int) -> str:
    """The main-context settings: `worker_shutdown_timeout`, so that a reload (a drain, a node back,
    a certificate rotated) ends in bounded time: old workers still holding long-lived connections
    (keep-alive, WebSocket, a long download) close them after that many seconds instead of living on
    for minutes beside the new ones."""
    if not 1 <= shutdown_timeout <= 3600:
        raise TcsessionError(f"worker_shutdown_timeout {shutdown_timeout!r} is not 1-3600 seconds; "
                             "fix [rolling] drain_timeout")
    return (f"{HEADER}\n"
            "# nginx's main context ([rolling] drain_timeout): old workers end at most this long after a reload.\n"
            f"worker_shutdown_timeout {shutdown_timeout}s;\n")


def upstream_name(jvm_route: str) -> str:
    """The upstream that prefers the node with this jvmRoute."""
    return UPSTREAM_PREFIX + jvm_route


def render_site(backends: Sequence[Backend], *, listen_port: int = 80,
                routing: str = "jvmroute", listen_ipv6: bool = False, tls: TlsSite | None = None) -> str:
    """The whole nginx site file (an `http`-level include: conf.d/*.conf or sites-enabled/).

    Deterministic: the same arguments give the same text; backends keep the order given.
    `listen_ipv6` adds `listen [::]:<port>` (off by default: it fails where IPv6 is disabled).
    """
    _validate(backends, listen_port, routing)
    out: list[str] = [HEADER]
    if routing == "jvmroute":
        out += _jvmroute_blocks(backends)
        target = BACKEND_VARIABLE
    else:
        out += [
            "# Routing: round robin over every node (sessions are not kept on one node).",
            "",
            *_upstream(ALL_UPSTREAM, [(b, False) for b in backends]),
        ]
        target = ALL_UPSTREAM
    if tls is None:
        out += _server(listen_port, listen_ipv6, target)
    else:
        out += _tls_servers(listen_port, listen_ipv6, target, tls)
    return "\n".join(out) + "\n"


def _jvmroute_blocks(backends: Sequence[Backend]) -> list[str]:
    width = max(len(b.jvm_route) for b in backends) + 4  # "~\." + route + "$"
    lines = [
        "# Routing: by the jvmRoute suffix of the JSESSIONID cookie (\"<id>.<jvmRoute>\").",
        "# Each node's upstream lists the other nodes as backup: a session stays on its node",
        "# while that node is up. No cookie, or an unknown route: round robin over all nodes.",
        "# A session id sent only as a ;jsessionid= path parameter is not routed by node.",
        "",
        f"map $cookie_jsessionid {BACKEND_VARIABLE} {{",
        f"    {'default':<{width}} {ALL_UPSTREAM};",
    ]
    for b in backends:
        key = "~\\." + b.jvm_route + "$"
        lines.append(f"    {key:<{width}} {upstream_name(b.jvm_route)};")
    lines += ["}", ""]
    for b in backends:
        members = [(b, False)] + [(o, True) for o in backends if o is not b]
        lines.append(f"# {b.name}: its own sessions first, the other nodes as backup")
        lines += _upstream(upstream_name(b.jvm_route), members)
    lines.append("# No session yet, or a route no node has: every node in turn")
    lines += _upstream(ALL_UPSTREAM, [(b, False) for b in backends])
    return lines


def _upstream(name: str, members: list[tuple[Backend, bool]]) -> list[str]:
    lines = [f"upstream {name} {{"]
    for backend, backup in members:
        params = f"max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT}"
        if backup:
            params += " backup"
        lines.append(f"    server {_host_port(backend)} {params};  # {backend.name}")
    lines += ["}", ""]
    return lines


def _server(listen_port: int, listen_ipv6: bool, target: str) -> list[str]:
    lines = [
        "server {",
        f"    listen {listen_port} default_server;",
    ]
    if listen_ipv6:
        lines.append(f"    listen [::]:{listen_port} default_server;")
    lines += [
        "    server_name _;",
        "    server_tokens off;",
        "",
        *_location(target, "$host" if listen_port == 80 else "$host:$server_port"),
        *_operator_include(),
        "}",
    ]
    return lines


def _location(target: str, host: str) -> list[str]:
    return [
        "    location / {",
        f"        proxy_pass http://{target};",
        "        proxy_http_version 1.1;",
        f"        proxy_set_header Host {host};",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $scheme;",
        f"        proxy_connect_timeout {CONNECT_TIMEOUT};",
        "        proxy_next_upstream error timeout http_502 http_503;",
        "    }",
    ]


def _operator_include() -> list[str]:
    return ["", f"    # Your own settings for this server: {OPERATOR_DIR}/*.conf (tcsession never writes there)",
            f"    include {OPERATOR_DIR}/*.conf;"]


def _tls_servers(listen_port: int, listen_ipv6: bool, target: str, tls: TlsSite) -> list[str]:
    """Plain HTTP redirecting to HTTPS (or, for a migration, serving too), then the HTTPS server:
    TLS 1.2 and 1.3, HTTP/2, Tomcat told the scheme by X-Forwarded-Proto (its RemoteIpValve)."""
    if tls.redirect_http:
        port = "" if tls.https_port == 443 else f":{tls.https_port}"
        lines = ["server {", f"    listen {listen_port} default_server;"]
        if listen_ipv6:
            lines.append(f"    listen [::]:{listen_port} default_server;")
        lines += ["    server_name _;", "    server_tokens off;", f"    return 301 https://$host{port}$request_uri;",
                  "}", ""]
    else:
        lines = ["# [tls] redirect_http = false: plain HTTP still served (a migration)", *_server(
            listen_port, listen_ipv6, target), ""]
    lines += ["server {", f"    listen {tls.https_port} ssl http2 default_server;"]
    if listen_ipv6:
        lines.append(f"    listen [::]:{tls.https_port} ssl http2 default_server;")
    lines += [
        f"    server_name {tls.server_name};",
        "    server_tokens off;",
        "",
        f"    ssl_certificate {TLS_CERT};",
        f"    ssl_certificate_key {TLS_KEY};",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        f"    ssl_ciphers {TLS_CIPHERS};",
        "    ssl_prefer_server_ciphers off;",
        "    ssl_session_cache shared:tcsession_tls:10m;",
        "    ssl_session_timeout 1d;",
        "    ssl_session_tickets off;",
    ]
    if tls.hsts:
        lines.append(f'    add_header Strict-Transport-Security "max-age={tls.hsts}" always;')
    lines += ["", *_location(target, "$host" if tls.https_port == 443 else "$host:$server_port"),
              *_operator_include(), "}"]
    return lines


def _host_port(backend: Backend) -> str:
    try:
        ip = ipaddress.ip_address(backend.address)
    except ValueError:
        return f"{backend.address}:{backend.port}"
    if ip.version == 6:
        return f"[{ip.compressed}]:{backend.port}"
    return f"{ip}:{backend.port}"


def _validate(backends: Sequence[Backend], listen_port: int, routing: str) -> None:
    src = "nginx site"
    if routing not in ROUTINGS:
        raise TcsessionError(
            f"{src}: routing {routing!r} is not one of {', '.join(ROUTINGS)}; "
            "use jvmroute (sticky sessions) or roundrobin (non-sticky memcached)"
        )
    if not _is_port(listen_port):
        raise TcsessionError(f"{src}: listen port {listen_port!r} is not 1-65535; fix the balancer port")
    if not backends:
        raise TcsessionError(f"{src}: no Tomcat backends; add at least one [tomcat.*] host")
    names: dict[str, Backend] = {}
    endpoints: dict[tuple[str, int], Backend] = {}
    routes: dict[str, Backend] = {}
    for b in backends:
        if not isinstance(b.name, str) or not _NAME_RE.match(b.name):
            raise TcsessionError(
                f"{src}: backend name {b.name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -; rename the host"
            )
        if b.name in names:
            raise TcsessionError(f"{src}: backend name {b.name!r} appears twice; give each Tomcat its own name")
        names[b.name] = b
        if not _is_address(b.address):
            raise TcsessionError(
                f"{src}: backend {b.name!r} address {b.address!r} is not an IP address or host name; fix its address"
            )
        if not _is_port(b.port):
            raise TcsessionError(f"{src}: backend {b.name!r} port {b.port!r} is not 1-65535; fix its HTTP port")
        endpoint = (_host_port(b).lower(), b.port)
        if endpoint in endpoints:
            raise TcsessionError(
                f"{src}: backends {endpoints[endpoint].name!r} and {b.name!r} are both "
                f"{_host_port(b)}; give each Tomcat its own address or port"
            )
        endpoints[endpoint] = b
        if routing != "jvmroute":
            continue
        if not b.jvm_route:
            raise TcsessionError(
                f"{src}: backend {b.name!r} has no jvm_route, needed for jvmroute routing; "
                "set jvm_route on every Tomcat or use roundrobin routing"
            )
        if not isinstance(b.jvm_route, str) or not _ROUTE_RE.match(b.jvm_route):
            raise TcsessionError(
                f"{src}: backend {b.name!r} jvm_route {b.jvm_route!r} must be 1-64 characters of "
                "A-Z a-z 0-9 _ -; rename the route"
            )
        # nginx compares upstream names case-insensitively: "Tomcat1" and "tomcat1" would clash.
        key = b.jvm_route.lower()
        if key in routes:
            raise TcsessionError(
                f"{src}: backend {b.name!r} jvm_route {b.jvm_route!r} is already used by backend "
                f"{routes[key].name!r} (nginx ignores case in upstream names); give every node its own jvm_route"
            )
        routes[key] = b


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _is_address(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(_HOSTNAME_RE.match(value))


_SERVER_LINE = re.compile(r"^(?P<head>\s*server\s+(?P<hp>\S+?)(?P<params>(?:\s+[^;\s]+)*))\s*;", re.M)


def drain(site: str, address: str, port: int) -> str:
    """The same site with one node marked `down` in every upstream: nginx stops sending it new
    work (its sessions go to their backup nodes) while it restarts. Pure text on a file tcsession
    rendered itself; `undrain` is simply the original text."""
    return drain_all(site, [(address, port)])


def servers(site: str) -> set[tuple[str, int]]:
    """Every (address, port) the site sends requests to."""
    out = set()
    for m in _SERVER_LINE.finditer(site):
        host, _, port = m.group("hp").rpartition(":")
        if port.isdigit():
            out.add((host.strip("[]"), int(port)))
    return out


def drain_all(site: str, servers: Sequence[tuple[str, int]]) -> str:
    """The site with every one of `servers` (address, port) marked `down` in every upstream: a
    wave of nodes out of service in one reload. Refused when that would leave an upstream with
    no server up (the wave must leave a node serving)."""
    targets = {f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in servers}
    found: set[str] = set()

    def mark(m: re.Match) -> str:
        if m.group("hp") not in targets:
            return m.group(0)
        found.add(m.group("hp"))
        if "down" in m.group("params").split():
            return m.group(0)
        return m.group("head") + " down;"

    out = _SERVER_LINE.sub(mark, site)
    missing = sorted(targets - found)
    if missing:
        raise TcsessionError(f"nginx site: no server {missing[0]} in it; cannot take that node out of service")
    for block in re.finditer(r"upstream\s+(\S+)\s*\{(.*?)\}", out, re.S):
        servers_in = _SERVER_LINE.findall(block.group(2))
        if servers_in and all("down" in params.split() for _, _, params in servers_in):
            raise TcsessionError(f"nginx site: taking {', '.join(sorted(targets))} out of service leaves upstream "
                                 f"{block.group(1)} with no server; restart fewer nodes at once")
    return out
