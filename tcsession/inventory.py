"""The inventory: hosts.toml, loaded once into frozen dataclasses.

Every check of the file happens here, so the rest of tcsession can trust an
Inventory.  Problems raise InventoryError (a TcsessionError) listing every problem
of the file, one line each naming the file, the table/key and the fix.  Pure code: it reads the file and checks that the
SSH key file exists, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from tcsession.errors import InventoryError, TcsessionError
from tcsession.sshconfig import Hop, SshConfig, hop_problem, jump_chain, ssh_host_problem

LAB_ROOT = Path("/var/lib/tcsession/lab")
SSH_CONFIG_ENV = "TCSESSION_SSH_CONFIG"  # the SSH config when [ssh] config is not set (default ~/.ssh/config)


def lab_state_dir(name: str) -> Path:
    """Where the built-in lab called `name` keeps its SSH key, known_hosts and state."""
    return LAB_ROOT / name


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Ssh:
    user: str
    port: int
    key: Path | None
    agent: bool
    known_hosts: Path
    sudo: bool
    connect_timeout: float
    command_timeout: float
    host: str = ""  # where SSH connects (ssh_host, or the SSH config's HostName); "": the host's address
    jump: tuple[Hop, ...] = ()  # jump hosts, first hop first (jump, or the SSH config's ProxyJump)
    nopasswd: bool = False  # sudo_nopasswd: sudo needs no password (sudo -n), none is asked
    alias: str = ""  # the name looked up in the SSH config (ssh_host, else the address)


@dataclass(frozen=True)
class Host:
    name: str
    role: str  # "nginx" | "tomcat"
    address: str
    ssh: Ssh
    http_port: int
    jvm_route: str | None  # None for nginx
    memcached: bool  # False for nginx
    remove: bool = False  # [tomcat.NAME] remove = true: taken out of the cluster, its services stopped

    @property
    def ssh_address(self) -> str:
        """Where SSH connects: ssh_host / the SSH config's HostName, else the cluster address."""
        return self.ssh.host or self.address


@dataclass(frozen=True)
class Lab:
    name: str
    release: str  # "bookworm" (Tomcat 10.1) | "bullseye" (Tomcat 9)
    subnet: ipaddress.IPv4Network
    sudo_users: tuple[str, ...] = ()  # made on every host, sudo with the lab's password
    nopasswd_users: tuple[str, ...] = ()  # made on every host, sudo without a password
    root_login: bool = True  # false: PermitRootLogin no on every host
    jump_host: str = ""  # a host's name: the other hosts take SSH logins only from it

    @property
    def state_dir(self) -> Path:
        return lab_state_dir(self.name)


@dataclass(frozen=True)
class Tls:
    """[tls]: HTTPS at nginx. The certificate (full chain) and key are files on this machine; they
    go to the nginx host root-only (tcsession.nginx.TLS_CERT, TLS_KEY)."""

    certificate: Path
    key: Path
    server_name: str
    https_port: int = 443
    redirect_http: bool = True  # port 80 answers a redirect to https (false: it also serves, for a migration)
    hsts: int = 0  # Strict-Transport-Security max-age in seconds (0: not sent)
    ca: Path | None = None  # what status trusts for the certificate (None: the system's trust store)


@dataclass(frozen=True)
class Delta:
    manager: str  # "delta" | "backup"
    # "multicast" | "static"; None (not set): the kind the cluster runs, or "static" for a new one
    # (tcsession.rollout.resolve_membership, once the hosts' facts are read)
    # (a switch's intermediate pass sets "bridge-multicast" or "bridge-static", never the file:
    # tcsession.rollout.membership_passes)
    membership: str | None
    multicast_address: str
    multicast_port: int
    receiver_port: int
    channel_send_options: int
    state_transfer_timeout: int
    encrypt: bool = False  # EncryptInterceptor with the key in key_file
    key_file: str = ""  # absolute; default: <inventory>.cluster-key beside the inventory (root only)


def uses_multicast(membership: str | None) -> bool:
    """The kind (or a switch's bridge) runs McastService: multicast between the Tomcats."""
    return membership in ("multicast", "bridge-multicast")


@dataclass(frozen=True)
class Msm:
    sticky: bool
    serializer: str  # "java" | "kryo" | "javolution"
    locking_mode: str  # "none" | "all" | "auto" | "uriPattern:<regex>"
    request_uri_ignore_pattern: str
    scope: str  # "app" | "global"
    memcached_port: int
    memcached_localhost: bool  # memcached also listens on 127.0.0.1 (never on every address)
    maven_repo: str  # http(s) URL, or an absolute local directory path
    jakarta: str  # "convert" | "supplied" | "refuse"
    version: str
    backup: str = "sync"  # "sync": sessionBackupAsync="false"; "async": MSM's default


@dataclass(frozen=True)
class App:
    """One of the operator's applications ([app.NAME]): a WAR on this machine, its context path."""

    name: str
    war: Path  # absolute, on this machine
    context: str  # "/shop" (or "/a/b")
    jakarta: str  # "convert" | "refuse": a javax WAR onto Tomcat 10+
    # "keep": a version whose session classes the running one cannot read (serialVersionUID) is
    # refused; "drop": rolled anyway, the sessions the nodes hold counted and lost
    sessions: str = "keep"

    @property
    def base_name(self) -> str:
        """Tomcat's name for the context: its WAR is <base_name>.war, its descriptor <base_name>.xml
        ("/shop" -> "shop", "/a/b" -> "a#b")."""
        return self.context[1:].replace("/", "#")


@dataclass(frozen=True)
class AppSettings:
    """[app]'s own keys, beside the [app.NAME] applications: tcsession's test page, and what
    status's end-to-end check requests without it."""

    test_page: bool = False  # deploy the test application's /test.jsp (the lab: true)
    check_path: str = ""  # without the test page: a path status requests through nginx ("": skipped)
    # the session cookie's SameSite (tcsession.cookies): "lax" | "strict" | "none" | "unset";
    # "": conf/context.xml's CookieProcessor is not tcsession's to manage
    same_site: str = ""
    # the jars scanned at start (tcsession.jarscan): "all" (Tomcat's own scanning) | "listed"
    # (only the jars of jars_to_scan, file-name patterns)
    jar_scan: str = "all"
    jars_to_scan: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rolling:
    """How many Tomcats may be out of service at once during a rolling restart: a count, or a
    percentage of the Tomcats (rounded down, at least 1). The mode may allow fewer (see
    tcsession.plan.wave_size); never all of them."""

    max_unavailable: int | str = "50%"
    # how long a drain may take, in seconds: nginx's worker_shutdown_timeout (old workers close
    # what they still hold that long after a reload) and tcsession's wait for them
    drain_timeout: int = 10

    def limit(self, tomcats: int) -> int:
        v = self.max_unavailable
        n = int(v) if isinstance(v, int) else int(tomcats * int(v.rstrip("%")) / 100)
        return max(1, n)


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: tuple[Host, ...]  # nginx first, then the tomcats in file order
    lab: Lab | None
    delta: Delta
    msm: Msm
    rolling: Rolling = Rolling()
    max_parallel: int = 32  # [ssh] max_parallel: SSH sessions open at once (hosts worked on in parallel)
    apps: tuple[App, ...] = ()  # in file order
    app: AppSettings = AppSettings()
    firewall: str = "none"  # [firewall] backend: "nftables" (tcsession.firewall) | "none"
    # Tomcats with remove = true: not in the cluster (nginx, peers, memcached nodes); deploy
    # stops their services once nginx no longer sends to them. Not in `hosts`.
    removed: tuple[Host, ...] = ()
    tls: Tls | None = None  # [tls]: HTTPS at nginx (None: plain HTTP)
    mode: str | None = None  # [cluster] mode: "delta" | "msm" (None: not set; deploy then needs --mode)
    # [packages] automatic: "warn" (preflight and status say which automatic upgrader can restart
    # the cluster's services) | "hold" (tcsession's files keep the cluster's packages out of them)
    automatic: str = "warn"

    @property
    def nginx(self) -> Host:
        return next(h for h in self.hosts if h.role == "nginx")

    @property
    def tomcats(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.role == "tomcat")

    def host(self, name: str) -> Host:
        for h in self.hosts + self.removed:
            if h.name == name:
                return h
        names = ", ".join(h.name for h in self.hosts)
        raise TcsessionError(f'{self.path}: no host named "{name}"; use one of: {names}')


# --------------------------------------------------------------------------- schema

REQUIRED = object()
Check = Callable[[Any], "str | None"]  # returns "<problem>; <fix>" or None when fine

# kind -> (accepts the value?, description for "expected ...")
_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "int|str": (lambda v: isinstance(v, (int, str)) and not isinstance(v, bool), "an integer or a string"),
    "list": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "an array of strings"),
}


@dataclass(frozen=True)
class _Key:
    kind: str
    default: Any = REQUIRED
    check: Check | None = None
    example: str = ""  # shown in "expected ..." hints; defaults to the default value
    max_len: int = 256  # strings longer than this are refused (a typo or a paste gone wrong)


def _show(v: Any) -> str:
    """A value the way it would be written in TOML (one line)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return str(v)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _short(v: Any) -> str:
    """_show, cut to a readable length."""
    shown = _show(v)
    return shown if len(shown) <= 120 else shown[:100] + '..."'


def _kind_of(v: Any) -> str:
    for desc, test in (("a string", lambda: isinstance(v, str)), ("a boolean", lambda: isinstance(v, bool)),
                       ("an integer", lambda: isinstance(v, int)), ("a float", lambda: isinstance(v, float)),
                       ("a table", lambda: isinstance(v, dict)), ("an array", lambda: isinstance(v, list))):
        if test():
            return desc
    return "a date/time"


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else "is not a port number; use an integer from 1 to 65535"


def _positive(v: float) -> str | None:
    return None if math.isfinite(v) and v > 0 else "must be a number greater than 0; e.g. 10"


def _non_negative(v: int) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _one_of(*choices: str) -> Check:
    listed = ", ".join(json.dumps(c) for c in choices)
    check = lambda v: None if v in choices else f"is not one of {listed}; use one of them"  # noqa: E731
    check.choices = choices  # for the JSON Schema (tcsession.reference)
    return check


def _pattern(regex: str, fix: str) -> Check:
    rx = re.compile(regex)
    check = lambda v: None if rx.fullmatch(v) else f"is invalid; {fix}"  # noqa: E731
    check.regex = regex  # for the JSON Schema (tcsession.reference)
    return check


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "is empty; give a value or remove the key"


_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def _address(v: str) -> str | None:
    """A host's own unicast IPv4 address. Names are refused by design: the address is written
    into server.xml (the Receiver), nginx's upstreams and memcachedNodes, and compared with what
    `ss` shows listening; a name resolved differently on the hosts would break all of them."""
    if v != v.strip():
        return f'has spaces around it; write "{v.strip()}"'
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        if "://" in v:
            return 'is a URL, not an address; write the host\'s own IPv4 address such as "192.0.2.10"'
        if "/" in v:
            try:
                net = ipaddress.IPv4Network(v, strict=False)
            except ValueError:
                net = None
            if net is not None and "/" in v:
                return f'is a network, not an address; write the host\'s own address, e.g. "{v.split("/")[0]}"'
        odd = sorted({c for c in v if not (c.isalnum() or c in ".-")})
        if odd:
            shown = " ".join(f'"{c}"' if c != " " else "a space" for c in odd)
            return (f'is not an IPv4 address (it contains {shown}); write the host\'s own address such as '
                    '"192.0.2.10"')
        if len(v) <= 253 and _HOSTNAME.fullmatch(v) and not v.split(".")[-1].isdigit():
            return (f"is a host name; tcsession needs the host's IPv4 address (it goes into server.xml, "
                    f"nginx and memcached settings and is compared with what the host listens on), so "
                    f"names are not accepted: resolve it once (getent ahostsv4 {v}) and write the address")
        return 'is not an IPv4 address; write the host\'s own address such as "192.0.2.10"'
    if ip.version == 6:
        return ("is an IPv6 address, which tcsession does not support (Tomcat's cluster runs with "
                "java.net.preferIPv4Stack=true and memcached nodes are written host:port); use the host's IPv4 address")
    for test, what in ((ip.is_loopback, "a loopback address: every host would reach itself, not this one"),
                       (ip.is_unspecified, '"every address", not the address of one host'),
                       (ip.is_multicast, "a multicast group, not a host (the cluster's group is "
                                         "[delta] multicast_address)"),
                       (ip == ipaddress.IPv4Address("255.255.255.255"), "the broadcast address"),
                       (ip in ipaddress.IPv4Network("0.0.0.0/8"), 'in 0.0.0.0/8 ("this network"), not a host'),
                       (ip.is_reserved, "in the reserved range 240.0.0.0/4")):
        if test:
            return f"is {what}; use the host's own unicast IPv4 address, such as \"192.0.2.10\""
    return None


def _users(v: list) -> str | None:
    for u in v:
        if u == "root" or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", u):
            return (f"has {json.dumps(u)}, not a login name the lab can make; use lowercase names "
                    'other than root, e.g. ["ops"]')
    return None


def _multicast(v: str) -> str | None:
    try:
        if ipaddress.IPv4Address(v).is_multicast:
            return None
    except ValueError:
        pass
    return 'is not an IPv4 multicast address; use one in 224.0.0.0/4, e.g. "228.0.0.4"'


def _subnet(v: str) -> str | None:
    try:
        net = ipaddress.IPv4Network(v)
    except ValueError:
        try:
            net = ipaddress.IPv4Network(v, strict=False)
        except ValueError:
            return 'is not an IPv4 network; write a /24 network such as "10.153.0.0/24"'
        return f'has host bits set; write the network address, "{net}"'
    return None if net.prefixlen == 24 else 'is not a /24; write a /24 network such as "10.153.0.0/24"'


def java_regex_problem(v: str) -> str | None:
    """Why a Java regular expression would not compile, or None.

    Approximated with Python's re, which shares Java's common syntax: Java-only forms that
    Python lacks (\\p{Alpha}, \\Q...\\E, (?<name>...), \\k<name>) are rewritten first, so they
    are not refused; a few rare Java-only forms could still be, and Java-only errors pass."""
    approx = re.sub(r"\\Q(.*?)(?:\\E|$)", lambda m: re.escape(m[1]), v, flags=re.S)
    approx = re.sub(r"\\[pP]\{\w+\}|\\[pP][A-Za-z]", "x", approx)
    approx = re.sub(r"\(\?<(?=[A-Za-z])", "(?P<", approx)
    approx = re.sub(r"\\k<(\w+)>", r"(?P=\1)", approx)
    try:
        re.compile(approx)
    except re.error as e:
        return f"is not a valid regular expression ({e.msg} at position {e.pos})"
    except (RecursionError, OverflowError):
        return "is not a regular expression Tomcat could compile (nested too deep)"
    return None


def _locking_mode(v: str) -> str | None:
    if v in ("none", "all", "auto"):
        return None
    if v.startswith("uriPattern:") and v != "uriPattern:":
        problem = java_regex_problem(v[len("uriPattern:"):])
        return f"has a pattern that {problem}; fix the regex after uriPattern:" if problem else None
    return 'is invalid; use "none", "all", "auto" or "uriPattern:<regex>"'


def _uri_pattern(v: str) -> str | None:
    problem = java_regex_problem(v)
    return (f'{problem}; fix it (a Java regex, e.g. ".*\\\\.(ico|png|css|js)$") '
            f'or set "" to ignore nothing') if problem else None


# Tomcat's Channel send options (org.apache.catalina.tribes.Channel): the bits DeltaManager and
# BackupManager messages can be sent with. 1 (BYTE_MESSAGE) skips deserialisation, 16 (SECURE)
# needs an encrypting interceptor, 32 (UDP) a UDP receiver, 64 (MULTICAST) multicast membership
# and small messages: tcsession configures none of these.
SEND_OPTION_NAMES = {"use_ack": 2, "sync": 4, "synchronized_ack": 4, "async": 8, "asynchronous": 8}
_SEND_BITS_UNUSABLE = {1: "1 (byte_message)", 16: "16 (secure)", 32: "32 (udp)", 64: "64 (multicast)"}
_SEND_FIX = ('use a combination of 2 (use_ack), 4 (sync) and 8 (async), e.g. 6 (sync with ack, the default) '
             'or "async,use_ack"')


def send_options_value(v: int | str) -> int:
    """channel_send_options as an integer (names like "sync,use_ack" added up); call after the check."""
    if isinstance(v, int):
        return v
    return sum({SEND_OPTION_NAMES[n.strip().lower()] for n in v.split(",")})


def _send_options(v: int | str) -> str | None:
    if isinstance(v, str):
        names = [n.strip().lower() for n in v.split(",")]
        unknown = [n for n in names if n not in SEND_OPTION_NAMES]
        if unknown:
            return f'has an unknown option "{unknown[0]}"; {_SEND_FIX}'
        return None
    if v < 0:
        return f"is negative; {_SEND_FIX}"
    if v > 0x7F:
        return f"has bits no Tomcat Channel defines (above 64); {_SEND_FIX}"
    bad = [label for bit, label in _SEND_BITS_UNUSABLE.items() if v & bit]
    if bad:
        return (f"sets {', '.join(bad)}, which the cluster tcsession configures cannot use "
                f"(no such interceptor, receiver or membership); {_SEND_FIX}")
    return None


def _maven_repo(v: str) -> str | None:
    if "://" not in v:
        return _non_empty(v)
    u = urlsplit(v)
    if u.scheme in ("http", "https") and u.netloc:
        return None
    return 'is not an http(s) URL; use e.g. "https://repo.maven.apache.org/maven2" or a local directory path'


_USER = _pattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?", 'use a login name such as "root" or "ops"')
_PATH_LEN = 4096  # PATH_MAX

SSH_KEYS: dict[str, _Key] = {
    "user": _Key("str", "root", _USER, max_len=32),
    "port": _Key("int", 22, _port),
    "key": _Key("str", None, _non_empty, '"~/.ssh/id_ed25519"', max_len=_PATH_LEN),
    "agent": _Key("bool", False),
    "known_hosts": _Key("str", "~/.ssh/known_hosts", _non_empty, max_len=_PATH_LEN),
    "sudo": _Key("bool", None, example="true"),  # None: true when user != "root"
    "sudo_nopasswd": _Key("bool", False),  # sudoers has NOPASSWD for the user: sudo -n, no password asked
    "jump": _Key("str", None, hop_problem, '"ops@bastion.example.com"', max_len=1024),
    "connect_timeout": _Key("number", 10, _positive),
    "command_timeout": _Key("number", 600, _positive),
}
_ADDRESS = _Key("str", REQUIRED, _address, '"192.0.2.10"')
_SSH_HOST = _Key("str", None, ssh_host_problem, '"tc1.example.com"', max_len=253)
NGINX_KEYS: dict[str, _Key] = {
    "address": _ADDRESS,
    "http_port": _Key("int", 80, _port),
    "ssh_host": _SSH_HOST,  # where SSH connects, when not the address: a name, an address or a Host alias
}
TOMCAT_KEYS: dict[str, _Key] = {
    "address": _ADDRESS,
    "jvm_route": _Key("str", None, _pattern(
        r"[A-Za-z0-9_-]+",
        "use only letters, digits, _ and - (no dots: Tomcat appends it to session ids after a dot)"),
        '"tomcat1"', max_len=64),
    "memcached": _Key("bool", True),
    "http_port": _Key("int", 8080, _port),
    "remove": _Key("bool", False),
    "ssh_host": _SSH_HOST,
}
LAB_KEYS: dict[str, _Key] = {
    "name": _Key("str", "tcsession", _pattern(
        r"[a-z][a-z0-9-]{0,15}", "use a lowercase letter then up to 15 lowercase letters, digits or -")),
    "release": _Key("str", "bookworm", _one_of("bookworm", "bullseye")),
    "subnet": _Key("str", "10.153.0.0/24", _subnet),
    "sudo_users": _Key("list", [], lambda v: _users(v), '["ops"]'),
    "nopasswd_users": _Key("list", [], lambda v: _users(v), '["deploy"]'),
    "root_login": _Key("bool", True),
    "jump_host": _Key("str", "", example='"nginx"'),
}
DELTA_KEYS: dict[str, _Key] = {
    "manager": _Key("str", "delta", _one_of("delta", "backup")),
    "membership": _Key("str", None, _one_of("multicast", "static")),
    "multicast_address": _Key("str", "228.0.0.4", _multicast),
    "multicast_port": _Key("int", 45564, _port),
    "receiver_port": _Key("int", 4000, _port),
    "channel_send_options": _Key("int|str", 6, _send_options),
    "state_transfer_timeout": _Key("int", 60, lambda v: None if v > 0 else "must be greater than 0; e.g. 60"),
    "encrypt": _Key("bool", False),
    "key_file": _Key("str", "", max_len=_PATH_LEN),
}
def _max_unavailable(v: int | str) -> str | None:
    if isinstance(v, int):
        return None if v >= 1 else "must be at least 1 (one Tomcat at a time); e.g. 1 or \"25%\""
    m = re.fullmatch(r"(\d{1,3})%", v.strip())
    if not m or not 1 <= int(m[1]) <= 100:
        return 'is neither a count nor a percentage; write e.g. max_unavailable = 2 or max_unavailable = "25%"'
    return None


def _server_name(v: str) -> str | None:
    if len(v) <= 253 and _HOSTNAME.fullmatch(v) and not v.split(".")[-1].isdigit():
        return None
    return 'is not a DNS name; write the name clients use, such as "shop.example.com"'


TLS_KEYS: dict[str, _Key] = {
    "certificate": _Key("str", REQUIRED, _non_empty, '"tls/fullchain.pem"', max_len=_PATH_LEN),
    "key": _Key("str", REQUIRED, _non_empty, '"tls/privkey.pem"', max_len=_PATH_LEN),
    "server_name": _Key("str", REQUIRED, _server_name, '"shop.example.com"'),
    "https_port": _Key("int", 443, _port),
    "redirect_http": _Key("bool", True),
    "hsts": _Key("int", 0, lambda v: None if 0 <= v <= 63072000 else
                 "must be a max-age in seconds from 0 (off) to 63072000 (two years); e.g. 31536000"),
    "ca": _Key("str", "", example='"tls/ca.pem"', max_len=_PATH_LEN),
}
CLUSTER_KEYS: dict[str, _Key] = {
    "mode": _Key("str", None, _one_of("delta", "msm"), '"delta"'),
}
FIREWALL_KEYS: dict[str, _Key] = {
    "backend": _Key("str", "none", _one_of("nftables", "none")),
}
#: [packages]: the distribution's automatic upgraders against the cluster's packages (tcsession.unattended)
PACKAGES_KEYS: dict[str, _Key] = {
    "automatic": _Key("str", "warn", _one_of("warn", "hold")),
}
ROLLING_KEYS: dict[str, _Key] = {
    "max_unavailable": _Key("int|str", "50%", _max_unavailable, '"25%"'),
    "drain_timeout": _Key("int", 10, lambda v: None if 1 <= v <= 3600 else
                          "must be from 1 to 3600 seconds (how long nginx's old workers may finish their "
                          "requests after a reload); e.g. 10, or 300 for long downloads or WebSockets"),
}
#: [ssh] keys that apply to the run as a whole, not to one host (refused in host tables).
SSH_RUN_KEYS: dict[str, _Key] = {
    "max_parallel": _Key("int", 32, lambda v: None if 1 <= v <= 256 else
                         "must be from 1 to 256 (SSH sessions open at once); e.g. 32"),
    # The OpenSSH client config read for HostName, User, Port, IdentityFile, ProxyJump; "none": none.
    # Default: ~/.ssh/config when it exists (real servers); none for the lab unless set.
    "config": _Key("str", None, _non_empty, '"~/.ssh/config"', max_len=_PATH_LEN),
}
MSM_KEYS: dict[str, _Key] = {
    "sticky": _Key("bool", True),
    "serializer": _Key("str", "java", _one_of("java", "kryo", "javolution")),
    "locking_mode": _Key("str", "all", _locking_mode, max_len=1024),
    "backup": _Key("str", "sync", lambda v: None if v in ("sync", "async") else
                   'is not "sync" or "async"; use "sync" (each update stored in memcached before the '
                   'response) or "async" (stored after it: a Tomcat lost at once loses that update)'),
    "request_uri_ignore_pattern": _Key("str", r".*\.(ico|png|gif|jpg|css|js)$", _uri_pattern, max_len=1024),
    "scope": _Key("str", "app", _one_of("app", "global")),
    "memcached_port": _Key("int", 11211, _port),
    "memcached_localhost": _Key("bool", False),
    "maven_repo": _Key("str", "https://repo.maven.apache.org/maven2", _maven_repo, max_len=_PATH_LEN),
    "jakarta": _Key("str", "convert", _one_of("convert", "supplied", "refuse")),
    "version": _Key("str", "2.3.2", _pattern(r"\d+(\.\d+)*(-[A-Za-z0-9]+)*", 'use a version such as "2.3.2"')),
}
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def _context(v: str) -> str | None:
    if v == "/":
        return ('is the root context, which the tcsession test page (/test.jsp, in webapps/ROOT) occupies; '
                'give the application a path of its own, e.g. "/shop"')
    if not re.fullmatch(rf"(/{_SEGMENT})+", v):
        return ('is not a context path; write "/" followed by letters, digits, ".", "_" or "-" '
                '(segments separated by "/"), e.g. "/shop"')
    if v.lower() in ("/test.jsp", "/root") or any(seg in (".", "..") for seg in v.split("/")):
        return 'is reserved; give the application another path, e.g. "/shop"'
    return None


APP_KEYS: dict[str, _Key] = {
    "war": _Key("str", REQUIRED, _non_empty, '"build/shop.war"', max_len=_PATH_LEN),
    "context": _Key("str", None, _context, '"/shop"'),  # None: "/NAME"
    "jakarta": _Key("str", "convert", _one_of("convert", "refuse")),
    "sessions": _Key("str", "keep", _one_of("keep", "drop")),
}
APP_SETTINGS: dict[str, _Key] = {
    "test_page": _Key("bool", False),
    "check_path": _Key("str", "", lambda v: None if v == "" or re.fullmatch(r"/[^\s?#]*(\?[^\s#]*)?", v) else
                       'must be a path on the Tomcats starting with "/", without spaces, e.g. "/health"'),
    "same_site": _Key("str", "", lambda v: None if v in ("", "lax", "strict", "none", "unset") else
                      'is not "lax", "strict", "none" or "unset"; "lax" suits most sites (the cookie is not '
                      'sent with cross-site POSTs), "" leaves Tomcat\'s default'),
    "jar_scan": _Key("str", "all", _one_of("all", "listed")),
    "jars_to_scan": _Key("list", [], lambda v: next((f"has {json.dumps(x)}, not a jar file name pattern; write names "
                                                 'such as "taglibs-standard-impl-*.jar" (no commas or spaces)'
                                                 for x in v if not re.fullmatch(r"[\w.*?+-]+", x)), None),
                     '["taglibs-standard-impl-*.jar"]'),
}
TOP_TABLES = ("lab", "ssh", "cluster", "nginx", "tomcat", "delta", "msm", "rolling", "app", "firewall", "tls",
              "packages")
ROLE_KEYS = {"nginx": NGINX_KEYS, "tomcat": TOMCAT_KEYS}
SECRET_KEYS = ("password", "sudo_password", "passphrase")
LAB_PROVIDED = ("key", "agent", "known_hosts")
_HOST_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")


# --------------------------------------------------------------------------- parsing


def load_inventory(path: str | Path) -> Inventory:
    """Read and check the inventory file; TcsessionError (one line) on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InventoryError([
            f"{path}: no such file; create it: `tcsession init` writes a starter for real servers, or "
            f"copy hosts.toml (the built-in lab) or examples/hosts.real.toml from tcsession and edit it"]) from None
    except IsADirectoryError:
        raise InventoryError([f"{path}: is a directory; give the path of the hosts.toml file"]) from None
    except OSError as e:
        raise InventoryError([f"{path}: cannot read it ({e.strerror}); check the path and its permissions"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InventoryError([f"{path}: not UTF-8 text (bad byte at offset {e.start}); save it as UTF-8"]) from None
    return parse_inventory(text, path)


def parse_inventory(text: str, path: Path) -> Inventory:
    """Check the TOML text of an inventory; `path` names it in errors and anchors relative paths."""
    return _Parser(Path(path)).parse(text)


class _Abort(Exception):
    """The table (or key, or host) under way cannot be read further; its error is recorded."""


class _Parser:
    """Reads the whole file however many problems it has: each is recorded (`error`) and the
    parse goes on with the next key, host or table (`fail` records and gives up on the one
    under way), so that one run lists them all."""

    def __init__(self, path: Path):
        self.path = path
        self.base = Path(os.path.abspath(path)).parent
        self.lab: Lab | None = None
        self.errors: list[str] = []
        self.bad: set[tuple[str, str]] = set()  # (table, key) given but refused; (table, "*"): the table

    # -- helpers

    def error(self, where: str, msg: str) -> None:
        line = f"{self.path}: {where} {msg}" if where else f"{self.path}: {msg}"
        line = " ".join(line.split())  # always one line
        if line not in self.errors:
            self.errors.append(line)

    def fail(self, where: str, msg: str) -> None:
        self.error(where, msg)
        raise _Abort

    def attempt(self, fn: Callable[[], Any], default: Any = None) -> Any:
        """fn(), or `default` when it gave up (its errors recorded)."""
        try:
            return fn()
        except _Abort:
            return default

    def resolve(self, where: str, key: str, value: str) -> Path:
        try:
            p = Path(value).expanduser()
        except RuntimeError:
            self.fail(where, f"{key} = {_show(value)}: cannot expand ~; write the full path")
        return Path(os.path.normpath(self.base / p))

    def table(self, where: str, raw: Any, spec: dict[str, _Key], extra: dict[str, _Key] | None = None,
              ) -> dict[str, Any]:
        """Check the keys present in one table against spec (+extra); return them, without defaults."""
        if not isinstance(raw, dict):
            self.bad.add((where, "*"))
            self.fail("", f"{where} must be a table, not {_kind_of(raw)}; write it as a {where} section")
        known = {**spec, **(extra or {})}
        good: dict[str, Any] = {}
        gave_up = False
        for key, value in raw.items():
            try:
                self.key(where, key, value, known)
                good[key] = value
            except _Abort:
                self.bad.add((where, key))
                gave_up = gave_up or (key in spec and spec[key].default is REQUIRED)
        unknown = [key for key in raw if key not in known]
        for key, k in spec.items():
            if k.default is REQUIRED and key not in raw:
                if not any(difflib.get_close_matches(u, list(known), n=1) == [key] for u in unknown):
                    self.error(where, f"has no {key}; add {key} = {k.example}")  # (else: "did you mean")
                gave_up = True
        if gave_up:  # a required key missing or wrong: the table cannot be used
            raise _Abort
        return good

    def key(self, where: str, key: str, value: Any, known: dict[str, _Key]) -> None:
        """Check one key of a table (fail on its first problem)."""
        if key in SECRET_KEYS:
            fix = ("load the key into ssh-agent and set agent = true" if key == "passphrase" else
                   "set TCSESSION_SUDO_PASSWORD in the environment or let tcsession prompt")
            self.fail(where, f"{key}: no secrets in {self.path.name}; {fix}")
        if key not in known:
            names = list(known)
            close = difflib.get_close_matches(key, names, n=1)
            hint = f'did you mean "{close[0]}"?' if close else "remove it"
            self.fail(where, f'unknown key "{key}"; {hint} (known: {", ".join(names)})')
        k = known[key]
        accepts, desc = _KINDS[k.kind]
        if not accepts(value):
            example = k.example or _show(k.default)
            self.fail(where, f"{key} = {_show(value)} is {_kind_of(value)}, expected {desc}; "
                             f"write e.g. {key} = {example}")
        if isinstance(value, str):
            if len(value) > k.max_len:
                self.fail(where, f"{key} is {len(value)} characters long, more than {k.max_len} make sense; "
                                 f"write a shorter {key} (a paste gone wrong?)")
            control = next((c for c in value if _CONTROL.match(c)), None)
            if control is not None:
                self.fail(where, f"{key} = {json.dumps(value)[:80]} contains the control character "
                                 f"U+{ord(control):04X}; remove it")
        problem = k.check(value) if k.check else None
        if problem:
            self.fail(where, f"{key} = {_short(value)} {problem}")

    def with_defaults(self, where: str, raw: Any, spec: dict[str, _Key]) -> dict[str, Any]:
        return {k: s.default for k, s in spec.items()} | self.table(where, raw, spec)

    def no_lab_provided(self, where: str, values: dict[str, Any]) -> None:
        if self.lab:
            for key in LAB_PROVIDED:
                if key in values:
                    self.error(where, f"{key}: the lab provides the SSH key and known_hosts "
                                     f"({self.lab.state_dir}); remove {key} (or remove [lab] for real hosts)")

    # -- the file

    def parse(self, text: str) -> Inventory:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            msg = str(e)
            m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
            if m:
                where, msg = f"line {m[1]}, column {m[2]}", msg[:m.start()]
            else:
                where, msg = "end of file", re.sub(r"\s*\(at end of document\)$", "", msg)
            self.error("", f"invalid TOML at {where}: {msg}; fix the syntax")
            raise InventoryError(self.errors) from None
        try:
            inv = self.document(doc)
        except _Abort:
            inv = None
        if self.errors:
            raise InventoryError(self.errors)
        assert inv is not None
        return inv

    def document(self, doc: dict) -> Inventory:
        for key in doc:
            if key not in TOP_TABLES:
                close = difflib.get_close_matches(key, TOP_TABLES, n=1)
                hint = f"did you mean [{close[0]}]?" if close else "remove it"
                self.error("", f'unknown table or key "{key}"; {hint} (known: {", ".join(TOP_TABLES)})')

        lab_ok = True
        if "lab" in doc:
            before = len(self.errors)
            lab = self.attempt(lambda: self.with_defaults("[lab]", doc["lab"], LAB_KEYS))
            lab_ok = lab is not None and len(self.errors) == before
            lab = lab or {k: s.default for k, s in LAB_KEYS.items()}
            both = sorted(set(lab["sudo_users"]) & set(lab["nopasswd_users"]))
            if both:
                self.error("[lab]", f"{both[0]} is in both sudo_users and nopasswd_users; keep it in one")
                lab_ok = False
            self.lab = Lab(lab["name"], lab["release"], ipaddress.IPv4Network(lab["subnet"]),
                           tuple(lab["sudo_users"]), tuple(lab["nopasswd_users"]), lab["root_login"],
                           lab["jump_host"])

        cluster = self.attempt(lambda: self.with_defaults("[cluster]", doc.get("cluster", {}), CLUSTER_KEYS))
        ssh_set = self.attempt(lambda: self.table("[ssh]", doc.get("ssh", {}), SSH_KEYS, SSH_RUN_KEYS), {})
        self.no_lab_provided("[ssh]", ssh_set)
        max_parallel = ssh_set.pop("max_parallel", SSH_RUN_KEYS["max_parallel"].default)
        self.ssh_config = self.load_ssh_config(ssh_set.pop("config", None))

        before = len(self.errors)
        hosts = [h for role in ("nginx", "tomcat") for h in self.hosts(role, doc, ssh_set)]
        tables = {role: list(doc.get(role, {})) if isinstance(doc.get(role, {}), dict) else None  # None: not tables
                  for role in ("nginx", "tomcat")}
        complete = len(self.errors) == before
        self.check_hosts(hosts, complete=complete, lab=lab_ok, tables=tables)
        if self.lab and lab_ok and len(self.errors) == before:  # (an address outside the lab: said once)
            self.attempt(lambda: self.check_lab_ssh(hosts))

        delta = self.attempt(lambda: self.delta(doc))
        msm = self.attempt(lambda: self.msm(doc))
        if delta is not None and msm is not None:
            self.check_ports(hosts, delta, msm)
        rolling = self.attempt(lambda: self.with_defaults("[rolling]", doc.get("rolling", {}), ROLLING_KEYS))
        if rolling is not None:
            mu = rolling["max_unavailable"]
            rolling = Rolling(mu if isinstance(mu, int) else mu.strip(), rolling["drain_timeout"])
        apps_settings = self.attempt(lambda: self.apps(doc))
        firewall = self.attempt(
            lambda: self.with_defaults("[firewall]", doc.get("firewall", {}), FIREWALL_KEYS)["backend"])
        tls = self.attempt(lambda: self.tls(doc["tls"], hosts)) if "tls" in doc else None
        automatic = self.attempt(
            lambda: self.with_defaults("[packages]", doc.get("packages", {}), PACKAGES_KEYS)["automatic"])
        if apps_settings is not None and apps_settings[1].same_site == "none" and "tls" not in doc:
            self.error("[app]", 'same_site = "none" needs [tls]: browsers drop a SameSite=None cookie that is not '
                                'Secure; add [tls], or use "lax"')
        if self.errors:
            raise _Abort
        apps, settings = apps_settings
        return Inventory(self.path, tuple(h for h in hosts if not h.remove), self.lab, delta, msm, rolling,
                         max_parallel, apps, settings, firewall, tuple(h for h in hosts if h.remove), tls,
                         cluster["mode"], automatic)

    def delta(self, doc: dict) -> Delta:
        delta = self.with_defaults("[delta]", doc.get("delta", {}), DELTA_KEYS)
        delta["channel_send_options"] = send_options_value(delta["channel_send_options"])
        delta["key_file"] = str(self.resolve("[delta]", "key_file", delta["key_file"]) if delta["key_file"]
                                else self.path.with_name(self.path.stem + ".cluster-key").absolute())
        return Delta(**delta)

    def msm(self, doc: dict) -> Msm:
        msm = self.with_defaults("[msm]", doc.get("msm", {}), MSM_KEYS)
        if "://" not in msm["maven_repo"]:
            repo = self.resolve("[msm]", "maven_repo", msm["maven_repo"])
            if not repo.is_dir():
                what = "is not a directory" if repo.exists() else "no such directory"
                self.fail("[msm]", f"maven_repo = {_show(msm['maven_repo'])}: {what} {repo}; point it at a "
                                   f"Maven-layout directory holding the jars (e.g. a copy of ~/.m2/repository) "
                                   f'or at a repository URL such as "https://repo.maven.apache.org/maven2"')
            msm["maven_repo"] = str(repo)
        return Msm(**msm)

    def tls(self, raw: Any, hosts: list[Host]) -> Tls:
        values = self.with_defaults("[tls]", raw, TLS_KEYS)
        before = len(self.errors)
        for key in ("certificate", "key", "ca"):
            if key == "ca" and not values[key]:
                values[key] = None
                continue
            path = self.resolve("[tls]", key, values[key])
            if not path.is_file():
                what = "is a directory, not a file" if path.is_dir() else "no such file"
                self.error("[tls]", f"{key} = {_show(values[key])}: {what} {path}; give the PEM file "
                                    "(relative to the inventory file)")
            values[key] = path
        nginx = next((h for h in hosts if h.role == "nginx"), None)
        if nginx is not None and values["https_port"] == nginx.http_port:
            self.error("[tls]", f"https_port = {values['https_port']} is the same as [nginx.{nginx.name}] http_port; "
                               "give them different ports (443 and 80)")
        if len(self.errors) > before:
            raise _Abort
        return Tls(**values)

    def apps(self, doc: dict) -> tuple[tuple[App, ...], AppSettings]:
        section = doc.get("app", {})
        if not isinstance(section, dict):
            self.fail("", f"app must be tables like [app.NAME], not {_kind_of(section)}; "
                          'write one [app.NAME] table per application, with war = "..." under it')
        apps: list[App] = []
        settings = {k: v for k, v in section.items() if not isinstance(v, dict)}
        for name in list(settings):
            if name not in APP_SETTINGS:
                del settings[name]
                self.error("[app]", f"{name} = {_show(settings[name])} is neither a setting of [app] "
                                   f"({', '.join(APP_SETTINGS)}) nor an application table; for an application "
                                   f'write [app.{name}] with war = "path/to/app.war" under it')
        for name, raw in section.items():
            if isinstance(raw, dict):
                app = self.attempt(lambda: self.app(name, raw, apps))
                if app is not None:
                    apps.append(app)
        values = self.with_defaults("[app]", settings, APP_SETTINGS)
        values["jars_to_scan"] = tuple(values["jars_to_scan"])
        if values["jars_to_scan"] and values["jar_scan"] != "listed":
            self.error("[app]", 'jars_to_scan is read only with jar_scan = "listed" (Tomcat scans every jar by default); '
                                'add jar_scan = "listed" or remove jars_to_scan')
        return tuple(apps), AppSettings(**values)

    def app(self, name: str, raw: dict, apps: list[App]) -> App:
        where = f"[app.{name}]"
        if name in APP_SETTINGS:
            self.fail(where, f'"{name}" is a setting of [app], not an application name; '
                             "give the application another name")
        if not re.fullmatch(_SEGMENT, name):
            self.fail(where, f'invalid application name "{name}"; use letters, digits, ".", "_" or "-"')
        values = self.with_defaults(where, raw, APP_KEYS)
        context = values["context"] or f"/{name}"
        problem = _context(context)
        if problem:
            self.fail(where, f"context {_show(context)} (from the table name; set context = ...) {problem}")
        war = self.resolve(where, "war", values["war"])
        if not war.is_file():
            what = "is a directory, not a WAR file" if war.is_dir() else "no such file"
            self.fail(where, f"war = {_show(values['war'])}: {what} {war}; build the application "
                             "(e.g. mvn package) or fix the path (relative to the inventory file)")
        app = App(name, war, context, values["jakarta"], values["sessions"])
        for other in apps:
            if other.base_name.lower() == app.base_name.lower():
                self.fail(where, f"context {_show(context)} is already used by [app.{other.name}] "
                                 f"({_show(other.context)}); give each application its own context path")
        return app

    def hosts(self, role: str, doc: dict, ssh_set: dict) -> list[Host]:
        section = doc.get(role, {})
        if not isinstance(section, dict):
            self.error("", f"{role} must be tables like [{role}.NAME], not {_kind_of(section)}; "
                           f"write one [{role}.NAME] table per host")
            return []
        hosts = []
        for name, raw in section.items():
            host = self.attempt(lambda: self.host(role, name, raw, ssh_set))
            if host is not None:
                hosts.append(host)
        return hosts

    def host(self, role: str, name: str, raw: Any, ssh_set: dict) -> Host:
        where = f"[{role}.{name}]"
        if not isinstance(raw, dict):
            self.fail(f"[{role}]", f"{name} = {_show(raw)} is not a host table; put each host in its own "
                                   f"[{role}.NAME] table, e.g. [{role}.{role}1] with address = ... under it")
        if not _HOST_NAME.fullmatch(name):
            self.fail(where, f'invalid host name "{name}"; use a lowercase letter then up to 30 lowercase '
                             f"letters, digits or - (it becomes a host name)")
        spec = ROLE_KEYS[role]
        values = self.table(where, raw, spec, SSH_KEYS)
        host_ssh = {k: v for k, v in values.items() if k in SSH_KEYS}
        self.no_lab_provided(where, host_ssh)
        own = {k: s.default for k, s in spec.items()} | {k: v for k, v in values.items() if k in spec}
        tomcat = role == "tomcat"
        return Host(
            name=name, role=role, address=own["address"],
            ssh=self.ssh(where, ssh_set, host_ssh, own["address"], own["ssh_host"]),
            http_port=own["http_port"],
            jvm_route=(own["jvm_route"] or name) if tomcat else None,
            memcached=own["memcached"] if tomcat else False,
            remove=own.get("remove", False) if tomcat else False,
        )

    def load_ssh_config(self, value: str | None) -> SshConfig | None:
        """[ssh] config: the OpenSSH client config, read once. Unset: TCSESSION_SSH_CONFIG, else
        ~/.ssh/config when it exists (never for the lab, whose hosts are not the operator's);
        "none": no config."""
        if value is not None and value.strip().lower() == "none":
            return None
        if value is None:
            if self.lab:
                return None
            env = os.environ.get(SSH_CONFIG_ENV, "")
            if env.strip().lower() == "none":
                return None
            path = Path(env or "~/.ssh/config").expanduser()
            if not path.is_file():
                if env:
                    self.fail("", f"{SSH_CONFIG_ENV}={env}: no such file; point it at an OpenSSH client "
                                  'config, or set it to "none"')
                return None
        else:
            path = self.resolve("[ssh]", "config", value)
            if not path.is_file():
                what = "is a directory, not a file" if path.is_dir() else "no such file"
                self.fail("[ssh]", f'config = {_show(value)}: {what} {path}; give the OpenSSH client config '
                                   '(relative to the inventory file), or config = "none"')
        try:
            return SshConfig.load(path)
        except TcsessionError as e:
            self.fail("[ssh]", f"config: {e}")

    def ssh(self, where: str, ssh_set: dict, host_set: dict, address: str = "",
            ssh_host: str | None = None) -> Ssh:
        """The effective SSH settings of one host: defaults < the SSH config ([ssh] config, for
        ssh_host or the address) < [ssh] < the host's own table (what the inventory says wins,
        as options on ssh's command line win over its config)."""
        v = {k: s.default for k, s in SSH_KEYS.items()} | ssh_set | host_set
        given = ssh_set | host_set
        alias = ssh_host or address
        config = getattr(self, "ssh_config", None)
        resolved = None
        if config is not None and alias:
            try:
                resolved = config.lookup(alias)
            except TcsessionError as e:
                self.fail(where, f"ssh: {e}")
            if resolved.proxy_command and "jump" not in given:
                self.fail(where, f"{config.path}: ProxyCommand for {alias}, which tcsession does not run; "
                                 'use ProxyJump there, or jump = "..." in this table')
            if "user" not in given and resolved.user:
                v["user"] = resolved.user
            if "port" not in given and resolved.port:
                v["port"] = resolved.port
            if "jump" not in given and resolved.jump:
                v["jump"] = resolved.jump
            if "key" not in given and "agent" not in given and not self.lab:
                found = next((k for k in resolved.keys if k.is_file()), None)
                if found is not None:
                    v["key"] = str(found)

        def origin(*keys: str) -> str:
            return where if any(k in host_set for k in keys) else "[ssh]"

        def refused(*keys: str) -> bool:  # already an error: said once, not again as a consequence
            return any((t, k) in self.bad for t in (where, "[ssh]") for k in (*keys, "*"))

        sudo = v["sudo"]
        if sudo is None:
            sudo = v["user"] != "root"
        elif not sudo and v["user"] != "root" and not refused("user", "sudo"):
            self.error(origin("user", "sudo"), f'user = {_show(v["user"])} with sudo = false: tcsession needs root '
                                              f'on the hosts; set sudo = true or user = "root"')
        if self.lab:
            key, agent = self.lab.state_dir / "id_ed25519", False
            known_hosts = self.lab.state_dir / "known_hosts"
        else:
            key, agent = None, v["agent"]
            if v["key"] is not None:
                key = self.resolve(origin("key"), "key", v["key"])
                if not key.is_file():
                    what = "is a directory, not a key file" if key.is_dir() else "no such file"
                    self.error(origin("key"), f"key = {_show(v['key'])}: {what} {key}; create it "
                                              f"(ssh-keygen -t ed25519 -f {key}), fix the path, or use agent = true")
                problem = private_key_problem(key, agent) if key.is_file() else None
                if problem:
                    self.error(origin("key"), f"key = {_show(v['key'])}: {problem}")
            elif not agent and not refused("key", "agent"):
                self.error(origin("key", "agent"), 'has no SSH key: set key = "~/.ssh/id_ed25519" '
                                                  "(an existing private key) or agent = true")
            known_hosts = self.resolve(origin("known_hosts"), "known_hosts", v["known_hosts"])
        try:
            jump = jump_chain(config, v["jump"], v["user"], key)
        except TcsessionError as e:
            self.fail(origin("jump") if "jump" in given else where, f"jump: {e}")
        if not self.lab:
            for hop in jump:
                problem = private_key_problem(hop.key, agent) if hop.key and hop.key != key else None
                if problem:
                    self.fail(where, f"jump host {hop.name}: IdentityFile {problem}")
        else:
            jump = tuple(Hop(h.name, h.host, h.port, h.user, key) for h in jump)
        host = resolved.host if resolved is not None else (ssh_host or "")  # HostName, or the alias itself
        return Ssh(user=v["user"], port=v["port"], key=key, agent=agent, known_hosts=known_hosts, sudo=sudo,
                   connect_timeout=float(v["connect_timeout"]), command_timeout=float(v["command_timeout"]),
                   host="" if host == address else host, jump=jump, nopasswd=bool(v["sudo_nopasswd"]) and sudo,
                   alias=alias if alias != address else "")

    def check_hosts(self, hosts: list[Host], complete: bool = True, lab: bool = True,
                    tables: dict[str, list[str]] | None = None) -> None:
        """Across hosts: one nginx and two Tomcats or more (the tables counted as written, even those
        that could not be read), at least two Tomcats staying (when every host table could be read),
        names, addresses and jvm_routes unique, lab addresses in the lab's subnet."""
        if tables is None:
            tables = {role: [h.name for h in hosts if h.role == role] for role in ("nginx", "tomcat")}
        self.check_counts(tables["nginx"], tables["tomcat"],
                          [h for h in hosts if h.role == "tomcat"] if complete else None)
        self.check_unique(hosts, lab)

    def check_counts(self, nginx: list[str] | None, tomcat_names: list[str] | None,
                     tomcats: list[Host] | None) -> None:
        if nginx is None or tomcat_names is None:
            return  # [nginx] or [tomcat] is not a set of tables: said already
        if not nginx:
            self.error("", 'has no nginx host; add one [nginx.NAME] table, e.g. [nginx.nginx] with address = "..."')
        if len(nginx) > 1:
            self.error(f"[nginx.{nginx[1]}]", f"is a second nginx host besides [nginx.{nginx[0]}]; "
                                              f"keep exactly one [nginx.NAME] table")
        if len(tomcat_names) < 2:
            have = f"only [tomcat.{tomcat_names[0]}]" if tomcat_names else "none"
            self.error("", f"needs at least two [tomcat.NAME] tables, has {have}; add another Tomcat host")
            return
        if tomcats is None:
            return
        staying = [h for h in tomcats if not h.remove]
        if len(staying) < 2:
            self.error(f"[tomcat.{tomcats[-1].name}]", f"remove = true leaves {len(staying)} Tomcat(s) in the cluster; "
                                                      "keep at least two (remove fewer, or add another Tomcat host)")

    def check_unique(self, hosts: list[Host], lab: bool) -> None:
        seen_name: dict[str, Host] = {}
        seen_addr: dict[Any, Host] = {}
        seen_route: dict[str, Host] = {}
        for h in hosts:
            where = f"[{h.role}.{h.name}]"
            if h.name in seen_name:
                other = seen_name[h.name]
                self.error(where, f"has the same name as [{other.role}.{other.name}]; host names must be unique, "
                                 f"rename one of them")
            seen_name[h.name] = h
            addr = _address_key(h.address)
            if addr in seen_addr:
                other = seen_addr[addr]
                self.error(where, f"address {_show(h.address)} is already used by [{other.role}.{other.name}]; "
                                 f"give each host its own address")
            seen_addr[addr] = h
            if h.jvm_route is not None:
                route = h.jvm_route.lower()  # nginx compares upstream names without case
                if route in seen_route:
                    other = seen_route[route]
                    same = ("is already used by" if other.jvm_route == h.jvm_route else
                            f"differs only in case from {_show(other.jvm_route)} of")
                    self.error(where, f"jvm_route {_show(h.jvm_route)} {same} [tomcat.{other.name}] "
                                     f"(nginx ignores case in upstream names); give each Tomcat its own jvm_route")
                seen_route[route] = h
            if self.lab and lab:
                self.check_lab_address(where, h.address)

    def check_lab_ssh(self, hosts: list[Host]) -> None:
        """A lab inventory's SSH: only to the lab's own addresses, as users the lab makes."""
        lab = self.lab
        names = {h.name for h in hosts}
        if lab.jump_host and lab.jump_host not in names:
            self.fail("[lab]", f"jump_host = {_show(lab.jump_host)} is not a host of this inventory; "
                               f"use one of {', '.join(sorted(names))}")
        made = set(lab.sudo_users) | set(lab.nopasswd_users)
        for h in hosts:
            where = f"[{h.role}.{h.name}]"
            ssh = h.ssh
            if ssh.user == "root" and not lab.root_login:
                self.fail(where, "logs in as root, but the lab's hosts refuse root (root_login = false); "
                                 f"set user = one of [lab] sudo_users/nopasswd_users, or root_login = true")
            if ssh.user != "root" and ssh.user not in made:
                self.fail(where, f"user = {_show(ssh.user)} is not a user the lab makes; add it to [lab] "
                                 "sudo_users (sudo with a password) or nopasswd_users")
            if ssh.nopasswd and ssh.user in lab.sudo_users:
                self.fail(where, f"sudo_nopasswd = true, but the lab's {ssh.user} needs a password for sudo "
                                 "(it is in sudo_users); move it to nopasswd_users or remove sudo_nopasswd")
            ends = [(f"SSH host {h.ssh_address}", h.ssh_address)]
            ends += [(f"jump host {j.name}" + (f" ({j.host})" if j.name != j.host else ""), j.host) for j in ssh.jump]
            for i, (what, addr) in enumerate(ends):
                try:
                    inside = ipaddress.IPv4Address(addr) in lab.subnet
                except ValueError:  # a name: only a lab host's, resolved by the lab's jump host before it
                    chain = [j.host for j in ssh.jump]  # ends[0] is reached from chain[-1], ends[i] from chain[i-2]
                    before = (chain[-1] if chain else None) if i == 0 else (chain[i - 2] if i >= 2 else None)
                    inside = addr in names and before is not None and before in [
                        x.address for x in hosts if x.name == lab.jump_host]
                if not inside:
                    self.fail(where, f"{what} is not an address of the lab subnet {lab.subnet}; "
                                     "a lab inventory connects only to the lab's hosts")

    def check_lab_address(self, where: str, address: str) -> None:
        net = self.lab.subnet
        usable = f"use an address from {net.network_address + 2} to {net.broadcast_address - 1}"
        try:
            ip = ipaddress.IPv4Address(address)
        except ValueError:
            self.error(where, f"address {_show(address)} is not an IPv4 address; the lab needs one in {net}: {usable}")
            return
        if ip not in net:
            self.error(where, f"address {_show(address)} is outside the lab subnet {net}; {usable}")
            return
        special = {net.network_address: "the network address", net.network_address + 1:
                   "the control machine's address", net.broadcast_address: "the broadcast address"}
        if ip in special:
            self.error(where, f"address {_show(address)} is {special[ip]} of the lab subnet {net}; {usable}")

    def check_ports(self, hosts: list[Host], delta: Delta, msm: Msm) -> None:
        """Ports that would meet on one host must differ."""
        for h in hosts:
            ports = [(f"[{h.role}.{h.name}] http_port", h.http_port)]
            if not h.ssh.host:  # SSH on the cluster address
                ports.append(("ssh port", h.ssh.port))
            if h.role == "tomcat":
                ports.append(("[delta] receiver_port", delta.receiver_port))
                if h.memcached:
                    ports.append(("[msm] memcached_port", msm.memcached_port))
            for i, (a, pa) in enumerate(ports):
                for b, pb in ports[i + 1:]:
                    if pa == pb:
                        self.error("", f"{a} {pa} is the same as {b} on host {h.name}; give them different ports")


_KEY_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----\s*\n(.*?)-----END \1PRIVATE KEY-----", re.S)


def private_key_problem(path: Path, agent: bool = False) -> str | None:
    """What OpenSSH (and paramiko) would refuse about a private key file, or None.

    Pure file checks, no cryptography: the permissions (OpenSSH refuses a key others can read),
    the format (OpenSSH or PEM, not a public key or a PuTTY file) and whether it is encrypted
    (tcsession never asks for a passphrase; the agent holds decrypted keys)."""
    try:
        st = path.stat()
        if st.st_size > 64 * 1024:
            return f"{path} is {st.st_size} bytes, too big for a private key; give the private key file"
        data = path.read_bytes()
    except OSError as e:
        return f"cannot read {path} ({e.strerror}); check its owner and permissions"
    text = data.decode("ascii", "replace").replace("\r\n", "\n")
    first = text.lstrip().split("\n", 1)[0]
    # what the file is, before how it is kept: a public key needs no chmod, it needs replacing
    if re.match(r"(ssh-|ecdsa-|sk-)\S+ AAAA", first):
        private = path.with_suffix("") if path.suffix == ".pub" else None
        return (f"{path} is a public key; give the private key"
                + (f" ({private})" if private else " (the file without .pub)"))
    if st.st_mode & 0o077:
        return (f"{path} can be read by group or others (mode {st.st_mode & 0o777:04o}) and OpenSSH "
                f"refuses such a key; make it private: chmod 600 {path}")
    generate = f"generate one (ssh-keygen -t ed25519 -f {path}) or use agent = true"
    if not text.strip():
        return f"{path} is empty; {generate}"
    if first.startswith("PuTTY-User-Key-File"):
        return f"{path} is a PuTTY key; convert it: puttygen {path} -O private-openssh -o {path.with_suffix('')}"
    encrypted = (f"{path} is encrypted with a passphrase, which tcsession never asks for; load it into the "
                 f"agent (ssh-add {path}) and set agent = true")
    if "-----BEGIN ENCRYPTED PRIVATE KEY-----" in text:
        return None if agent else encrypted
    m = _KEY_BEGIN.search(text)
    if not m:
        return f"{path} is not a private key (no -----BEGIN ... PRIVATE KEY----- block); {generate}"
    body = m[2]
    if "Proc-Type: 4,ENCRYPTED" in body:
        return None if agent else encrypted
    body = "".join(l for l in body.split("\n") if ":" not in l)  # PEM headers
    try:
        raw = base64.b64decode("".join(body.split()), validate=True)
    except (ValueError, binascii.Error):
        return f"{path} is damaged (its base64 body does not decode); restore it or {generate}"
    if m[1] == "OPENSSH ":
        magic = b"openssh-key-v1\0"
        if not raw.startswith(magic) or len(raw) < len(magic) + 4:
            return f"{path} is damaged (not an openssh-key-v1 body); restore it or {generate}"
        n = int.from_bytes(raw[len(magic):len(magic) + 4], "big")
        cipher = raw[len(magic) + 4:len(magic) + 4 + n]
        if cipher != b"none":
            return None if agent else encrypted
    return None


def _address_key(address: str) -> Any:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return address.lower()
