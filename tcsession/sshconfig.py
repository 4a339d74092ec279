"""OpenSSH client configuration (~/.ssh/config): read once, looked up per host, pure.

tcsession takes from it what decides where and as whom it logs in: HostName, User, Port,
IdentityFile and ProxyJump (each jump host looked up in turn, its own ProxyJump included).
Host keys are not its business: they are always checked against the inventory's known_hosts,
whatever StrictHostKeyChecking or UserKnownHostsFile say. ProxyCommand is refused, not
ignored (ignoring it would connect directly).
"""

from __future__ import annotations

import glob
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcsession.errors import TcsessionError

MAX_HOPS = 8  # jump hosts in one chain (OpenSSH has no limit; a loop needs one)

_USER = r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?"
_HOSTPART = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_HOP = re.compile(rf"(?:ssh://)?(?:(?P<user>{_USER})@)?(?P<host>{_HOSTPART}|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{{1,5}}))?")


@dataclass(frozen=True)
class Hop:
    """One SSH endpoint on the way: a jump host."""

    name: str  # as written in jump / ProxyJump (an alias or an address)
    host: str  # what is connected to (HostName)
    port: int
    user: str
    key: Path | None  # None: the host's own key (or the agent)


@dataclass(frozen=True)
class Resolved:
    """What the SSH config says for one name (None: it says nothing)."""

    host: str
    user: str | None
    port: int | None
    keys: tuple[Path, ...]  # IdentityFile, in order, ~ expanded
    jump: str | None  # ProxyJump ("none" kept as written)
    proxy_command: str | None


def hop_problem(value: str) -> str | None:
    """Why a jump value ("none", or [user@]host[:port] hops separated by commas) is invalid."""
    if value.strip().lower() == "none":
        return None
    hops = value.split(",")
    for hop in hops:
        hop = hop.strip()
        if not hop:
            return 'has an empty hop; write e.g. jump = "ops@bastion.example.com:22" (hops separated by commas)'
        m = _HOP.fullmatch(hop)
        if not m:
            return (f'has the hop "{hop}", which is not [user@]host[:port]; write e.g. '
                    'jump = "ops@bastion.example.com:22", or a Host alias of the SSH config')
        if m["port"] and not 1 <= int(m["port"]) <= 65535:
            return f'has the port {m["port"]} in "{hop}"; use a port from 1 to 65535'
    if len(hops) > MAX_HOPS:
        return f"has {len(hops)} hops; tcsession follows at most {MAX_HOPS}"
    return None


def ssh_host_problem(value: str) -> str | None:
    """Why an ssh_host value (a name, an address or a Host alias) is invalid."""
    if "@" in value:
        return 'has a user in it; write the user as user = "..." and the host alone in ssh_host'
    if re.fullmatch(rf"{_HOSTPART}:\d+", value):
        return "has a port in it; write the port as port = ... and the host alone in ssh_host"
    if not re.fullmatch(_HOSTPART, value):
        return 'is not a host name, an IPv4 address or a Host alias of the SSH config; write e.g. "tc1.example.com"'
    return None


class SshConfig:
    """A parsed OpenSSH client config file (Include followed), or an empty one."""

    def __init__(self, path: Path | None, text: str = ""):
        import paramiko  # noqa: PLC0415 (only when a config is read)

        self.path = path
        self._config = paramiko.SSHConfig()
        if text:
            try:
                self._config.parse(io.StringIO(text))
            except Exception as e:  # noqa: BLE001 (paramiko's ConfigParseError, ValueError from Match)
                why = " ".join(str(e).split())[:120] or type(e).__name__
                raise TcsessionError(f"{path}: not a valid SSH config ({why}); fix it "
                                     f"(ssh -G -F {path} HOST shows how OpenSSH reads it)") from None

    @classmethod
    def load(cls, path: Path) -> SshConfig:
        return cls(path, _read_with_includes(path, path.parent, 0))

    def lookup(self, name: str) -> Resolved:
        try:
            c: dict[str, Any] = self._config.lookup(name)
        except Exception as e:  # noqa: BLE001 (Match exec failing, canonicalization)
            why = " ".join(str(e).split())[:120] or type(e).__name__
            raise TcsessionError(f"{self.path}: looking up {name!r} failed ({why}); fix the SSH config") from None
        port = c.get("port")
        if port is not None:
            if not str(port).isdigit() or not 1 <= int(port) <= 65535:
                raise TcsessionError(f"{self.path}: Port {port} (for {name}) is not a port number; "
                                     "use an integer from 1 to 65535")
            port = int(port)
        user = c.get("user")
        if user is not None and not re.fullmatch(_USER, user):
            raise TcsessionError(f"{self.path}: User {user!r} (for {name}) is not a login name; fix it")
        keys = tuple(Path(os.path.expanduser(k)) for k in c.get("identityfile", ()))
        jump = c.get("proxyjump")
        return Resolved(host=c.get("hostname", name), user=user, port=port, keys=keys,
                        jump=jump, proxy_command=c.get("proxycommand"))


def _read_with_includes(path: Path, base: Path, depth: int) -> str:
    """The file's text with its Include lines replaced by the files they name (globs, relative
    to the directory of the top file, as OpenSSH's user config is to ~/.ssh)."""
    if depth > 16:
        raise TcsessionError(f"{path}: Include nested more than 16 deep (a loop?); fix the SSH config")
    try:
        text = path.read_text()
    except IsADirectoryError:
        raise TcsessionError(f"{path}: is a directory, not an SSH config file; fix [ssh] config") from None
    except UnicodeDecodeError:
        raise TcsessionError(f"{path}: not UTF-8 text; is it an SSH config file?") from None
    except OSError as e:
        raise TcsessionError(f"{path}: cannot read the SSH config ({e.strerror}); check the path "
                             "and its permissions, or set [ssh] config = \"none\"") from None
    out = []
    for line in text.splitlines():
        m = re.match(r"\s*include\s*=?\s*(.+)$", line, re.I)
        if not m:
            out.append(line)
            continue
        for pattern in m[1].split():
            pattern = os.path.expanduser(pattern.strip('"'))
            full = pattern if os.path.isabs(pattern) else str(base / pattern)
            for found in sorted(glob.glob(full)):
                out.append(_read_with_includes(Path(found), base, depth + 1))
    return "\n".join(out) + "\n"


def parse_hop(spec: str) -> tuple[str | None, str, int | None]:
    """[ssh://][user@]host[:port] -> (user, host, port); call after hop_problem."""
    m = _HOP.fullmatch(spec.strip())
    assert m is not None, spec
    host = m["host"].strip("[]")
    return m["user"], host, int(m["port"]) if m["port"] else None


def jump_chain(config: SshConfig | None, jump: str | None, default_user: str,
               default_key: Path | None, seen: tuple[str, ...] = ()) -> tuple[Hop, ...]:
    """The jump hosts, first hop first, of a `jump` (the inventory's) or ProxyJump value: each
    hop looked up in the SSH config (HostName, User, Port, IdentityFile), its own ProxyJump
    put before it. The user defaults to the host's login user, the key to the host's key.
    TcsessionError (one line) for a loop, a chain too long or a ProxyCommand."""
    if jump is None or jump.strip().lower() == "none":
        return ()
    problem = hop_problem(jump)
    if problem:
        where = f"{config.path}: ProxyJump" if config else "jump"
        raise TcsessionError(f"{where} {jump!r} {problem}")
    hops: list[Hop] = []
    for spec in jump.split(","):
        user, name, port = parse_hop(spec)
        if name in seen:
            raise TcsessionError(f"{config.path if config else 'jump'}: jump host {name!r} leads back to "
                                 f"itself ({' -> '.join(seen + (name,))}); fix ProxyJump")
        if len(seen) >= MAX_HOPS:
            raise TcsessionError(f"{config.path if config else 'jump'}: more than {MAX_HOPS} jump hosts "
                                 f"({' -> '.join(seen)}); shorten the chain")
        r = config.lookup(name) if config else None
        if r is not None and r.proxy_command:
            raise TcsessionError(f"{config.path}: jump host {name} has a ProxyCommand, which tcsession does "
                                 "not run; use ProxyJump instead")
        key = next((k for k in r.keys if k.is_file()), None) if r else None
        hop_user = user or (r.user if r else None) or default_user
        inner = jump_chain(config, r.jump, hop_user, key or default_key, seen + (name,)) if r else ()
        hops += [*inner, Hop(name=name, host=r.host if r else name, port=port or (r.port if r else None) or 22,
                             user=hop_user, key=key or default_key)]
    return tuple(hops)
