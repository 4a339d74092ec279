"""Parsers of command output read from the hosts (pure: text in, data out).

- `parse_ss(text)`: listening sockets from `ss -Hntl` / `ss -Hnul` (or with the header line,
  or `ss -Hnl` with its Netid column), in the formats of iproute2 3.10 (CentOS 7) to 6.x.
- `listening_on`, `reachable_on`, `is_wildcard`: questions asked of those listeners.
- `parse_os_release(text)`: /etc/os-release as a dict.

How ss prints a local address (iproute2 ss.c, `inet_addr_print`):
  0.0.0.0:80                 IPv4 any
  [::]:80                    IPv6 any with IPV6_V6ONLY set (nginx's `listen [::]:80`)
  *:8080                     IPv6 any without IPV6_V6ONLY: IPv4 and IPv6 (Java, Tomcat);
                             iproute2 3.10 (CentOS 7) prints `*` for IPv4 any instead
  :::22                      iproute2 3.10: IPv6 any, brackets and the V6ONLY flag not shown
  [::ffff:10.153.0.112]:4000 an IPv4 address bound by a dual-stack (Java) socket
  127.0.0.53%lo:53           bound to an interface (SO_BINDTODEVICE); also [fe80::1]%eth0:22
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

from tcsession.errors import TcsessionError

#: Socket states ss prints; a line whose first field is one of these has no Netid column.
_STATES = frozenset({
    "LISTEN", "UNCONN", "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2",
    "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK", "CLOSING", "CLOSED", "UNKNOWN", "BOUND",
})
_PROTOS = ("tcp", "udp")


@dataclass(frozen=True)
class Listener:
    """A listening socket. `address` has no brackets and no %interface: "0.0.0.0", "::",
    "*", "10.153.0.112", "::ffff:10.153.0.112", "fe80::1". `interface` is the device the
    socket is bound to ("" if none). `dual_stack`: an IPv6 wildcard that also accepts IPv4
    (`*`, and the bracket-less `::` of old ss, which cannot tell and is the Linux default).
    """

    proto: str
    address: str
    port: int
    interface: str = ""
    dual_stack: bool = False

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        scope = f"%{self.interface}" if self.interface else ""
        return f"{host}{scope}:{self.port}/{self.proto}"


def parse_ss(text: str, proto: str | None = None) -> tuple[Listener, ...]:
    """Listeners in `ss -ntl` / `ss -nul` / `ss -nl` output, with or without its header line.

    The protocol comes from `proto` if given, else from the Netid column if present (lines
    of other netids, such as u_str, are skipped), else from the state: LISTEN is tcp, UNCONN
    is udp. Lines whose local port is "*" are skipped. A line that cannot be read raises
    TcsessionError (run ss with -n: service names instead of port numbers are not read).
    """
    if proto is not None and proto not in _PROTOS:
        raise TcsessionError(f"ss output: protocol {proto!r} is not tcp or udp")
    out: list[Listener] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] in ("State", "Netid"):
            continue  # header line
        netid = None
        if fields[0].upper() not in _STATES and len(fields) > 1 and fields[1].upper() in _STATES:
            netid, fields = fields[0], fields[1:]
        if netid is not None and proto is None and netid.lower() not in _PROTOS:
            continue  # u_str, raw, nl, ... in `ss -nl` output
        if len(fields) < 5 or fields[0].upper() not in _STATES \
                or not (fields[1].isdigit() and fields[2].isdigit()):
            raise TcsessionError(
                f"ss output line {lineno}: cannot read {line.strip()!r}; "
                "expected 'State Recv-Q Send-Q Local:Port Peer:Port' from ss -ntl or ss -nul"
            )
        state = fields[0].upper()
        if proto is not None:
            line_proto = proto
        elif netid is not None:
            line_proto = netid.lower()
        elif state == "LISTEN":
            line_proto = "tcp"
        elif state == "UNCONN":
            line_proto = "udp"
        else:
            raise TcsessionError(
                f"ss output line {lineno}: state {state} does not tell tcp from udp; "
                "run ss -ntl and ss -nul separately"
            )
        listener = _parse_local(fields[3], line_proto)
        if listener is None:
            continue
        if listener is False:
            raise TcsessionError(
                f"ss output line {lineno}: cannot read local address {fields[3]!r}; "
                "run ss with -n (numeric ports)"
            )
        out.append(listener)
    return tuple(out)


_LOCAL_RE = re.compile(
    r"""^(?:\[(?P<v6>[^\]]+)\]|(?P<host>.*?))   # [IPv6] or a bare address
         (?:%(?P<iface>[^:%\s]+))?              # optional %interface
         :(?P<port>\d+|\*)$""",
    re.VERBOSE,
)


def _parse_local(text: str, proto: str) -> Listener | None | bool:
    """A Listener; None to skip (port "*"); False if unreadable."""
    m = _LOCAL_RE.match(text)
    if not m:
        return False
    if m.group("port") == "*":
        return None
    port = int(m.group("port"))
    if port > 65535:
        return False
    iface = m.group("iface") or ""
    if m.group("v6") is not None:
        address = m.group("v6")
        bracketed = True
    else:
        address = m.group("host")
        bracketed = False
    if address == "*":
        return Listener(proto, "*", port, iface, dual_stack=True)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ":" not in address:  # pragma: no cover - ip_address guarantees
        return False
    if ip.version == 4 and bracketed:
        return False
    address = address.lower()  # as ss prints it (ipaddress would write ::ffff:a99:70)
    # Old ss (no brackets) cannot show IPV6_V6ONLY: an IPv6 wildcard there is, by the Linux
    # default (net.ipv6.bindv6only=0), dual stack. New ss prints "*" for that case instead.
    dual = ip.version == 6 and ip.is_unspecified and not bracketed
    return Listener(proto, address, port, iface, dual_stack=dual)


def is_wildcard(address: str) -> bool:
    """True for an address that means "every local address": 0.0.0.0, ::, [::], * ."""
    a = address.strip()
    if a == "*":
        return True
    if a.startswith("[") and a.endswith("]"):
        a = a[1:-1]
    a = a.split("%", 1)[0]
    try:
        return ipaddress.ip_address(a).is_unspecified
    except ValueError:
        return False


def listening_on(listeners: Iterable[Listener], port: int, proto: str = "tcp") -> list[str]:
    """Addresses (as in Listener.address, with %interface if bound to one) listening on a
    port, in the order found, without repeats."""
    seen: list[str] = []
    for listener in listeners:
        if listener.proto == proto and listener.port == port:
            label = listener.address + (f"%{listener.interface}" if listener.interface else "")
            if label not in seen:
                seen.append(label)
    return seen


def reachable_on(listeners: Iterable[Listener], address: str, port: int,
                 proto: str = "tcp") -> bool:
    """Whether something listens on `port` for connections to the local `address`: a listener
    on that exact address (an IPv4 address and its ::ffff: mapped form are the same), or on a
    wildcard covering its family (0.0.0.0: IPv4; [::]: IPv6; * or old ss ::: both). A listener
    bound to an interface (%dev) counts too: the caller knows which interface it asks about.
    """
    target = _ip(address)
    if target is None:
        raise TcsessionError(f"reachability probe: {address!r} is not an IP address; resolve it first")
    for listener in listeners:
        if listener.proto != proto or listener.port != port:
            continue
        if listener.address == "*":
            return True
        have = _ip(listener.address)
        if have is None:
            continue
        if have.is_unspecified:
            if have.version == 4 and target.version == 4:
                return True
            if have.version == 6 and (target.version == 6 or listener.dual_stack):
                return True
            continue
        if have == target:
            return True
    return False


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address; an IPv4-mapped IPv6 address becomes its IPv4 address."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    t = t.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_os_release(text: str) -> dict[str, str]:
    """/etc/os-release (os-release(5)): KEY=value lines, values optionally in single or double
    quotes with shell escapes; comments and blank lines ignored. Unreadable lines are skipped,
    as systemd does."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            continue
        parsed = _shell_value(value.strip())
        if parsed is not None:
            result[key] = parsed
    return result


def _shell_value(text: str) -> str | None:
    r"""A shell-style value: 'single', "double" (with \\ \" \$ \` escapes), bare words with
    backslash escapes; words separated by blanks are joined by one space. None if a quote is
    left open."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        in_word = True
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                return None
            word.append(text[i + 1:end])
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    return None
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and text[i + 1] in '\\"$`':
                    word.append(text[i + 1])
                    i += 2
                    continue
                word.append(c)
                i += 1
        elif c == "\\" and i + 1 < n:
            word.append(text[i + 1])
            i += 2
        else:
            word.append(c)
            i += 1
    if in_word:
        words.append("".join(word))
    return " ".join(words)


def parse_memcached_probe(text: str) -> dict[str, dict[str, str]]:
    """`@@memcached <address>:<port>` sections of `STAT <name> <value>` lines (memcached's
    `stats` answer) -> {"address:port": {"version": ..., "curr_items": ...}}; an unreachable
    node has an empty dict. Other `@@` sections around them (the facts' own) are skipped."""
    out: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):  # any other section ends this one
            current = line.split(None, 1)[1].strip() if line.startswith("@@memcached ") else None
            if current is not None:
                out[current] = {}
        elif current is not None and line.startswith("STAT "):
            parts = line.split(None, 2)
            if len(parts) == 3:
                out[current][parts[1]] = parts[2].strip()
    return out
