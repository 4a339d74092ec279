"""The one module that talks to Fabric: connections, commands, per-host results.

Everything else hands this module plain data (a host, a shell script, bytes) and gets plain
data back (`Result`). Host keys are always checked against the inventory's known_hosts file
(paramiko's RejectPolicy: an unknown or changed key refuses the connection).
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import functools
import getpass
import hashlib
import io
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tcsession import shell
from tcsession.errors import TcsessionError
from tcsession.inventory import Host, Inventory

T = TypeVar("T")

SUDO_PASSWORD_ENV = "TCSESSION_SUDO_PASSWORD"
# Linux takes at most 128 KiB in one argument (MAX_ARG_STRLEN), and sshd runs `sh -c <command>`.
# Scripts longer than MAX_INLINE_COMMAND are written to a root-only temporary file on the host in
# pieces, each sent command (sudo's quoting included) under MAX_WIRE, then run from it (standard
# input is no way: Invoke feeds it a byte per 10 ms).
MAX_INLINE_COMMAND = 64 * 1024
MAX_WIRE = 120 * 1024


@dataclasses.dataclass(frozen=True)
class Result:
    """What one command did on one host."""

    host: str
    command: str
    exit: int | None  # None: the command never ran (connection failed, timeout)
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # connection or timeout error, one line
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit == 0 and self.error is None

    def why(self) -> str:
        """One line saying why it failed (the last stderr line, or the connection error)."""
        if self.error:
            return self.error
        lines = (self.stderr or self.stdout).strip().splitlines()
        return f"exit {self.exit}: {lines[-1] if lines else 'no output'}"


class HostError(TcsessionError):
    def __init__(self, result: Result, what: str = ""):
        self.result = result
        super().__init__(f"{result.host}: {what + ': ' if what else ''}{result.why()}")


def quiet_paramiko() -> None:
    """paramiko logs a failed handshake (no banner, a reset) with three tracebacks through
    Python's last-resort handler when logging is not configured; tcsession reports the failure
    itself, in one line, so paramiko's log goes nowhere."""
    log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False


def _have_terminal() -> bool:
    """Whether getpass can ask: it reads /dev/tty, or standard input when that is a terminal."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return sys.stdin is not None and sys.stdin.isatty()
    os.close(fd)
    return True


def sudo_hosts(inv: Inventory) -> list[Host]:
    """The hosts whose sudo needs a password (not root, not sudo_nopasswd)."""
    return [h for h in inv.hosts + inv.removed if h.ssh.sudo and h.ssh.user != "root" and not h.ssh.nopasswd]


def lab_sudo_password_file(inv: Inventory) -> Path | None:
    """The lab's generated sudo password (root-only, in its state directory), for a lab inventory."""
    if inv.lab is None:
        return None
    from tcsession.inventory import lab_state_dir  # noqa: PLC0415

    return lab_state_dir(inv.lab.name) / "sudo-password"


def ask_sudo_password(inv: Inventory) -> str | None:
    """The sudo password for the inventory's sudo hosts, asked once, before any connection:
    from TCSESSION_SUDO_PASSWORD, else a prompt on the terminal; None when no host needs sudo.
    TcsessionError (one line) when there is no terminal to ask on, or no answer."""
    hosts = sudo_hosts(inv)
    if not hosts:
        return None
    password = os.environ.get(SUDO_PASSWORD_ENV)
    if password is not None:
        return password
    lab_file = lab_sudo_password_file(inv)
    if lab_file is not None and lab_file.is_file():  # the lab made it (never in the inventory)
        return lab_file.read_text().rstrip("\n")
    users = ", ".join(sorted({h.ssh.user for h in hosts}))
    names = ", ".join(h.name for h in hosts)
    if not _have_terminal():
        raise TcsessionError(
            f"{inv.path}: {names}: sudo = true (user {users}) needs a password and there is no terminal "
            f"to ask for it; set {SUDO_PASSWORD_ENV} in the environment (or log in as root)")
    try:
        return getpass.getpass(f"sudo password for {users} on {names}: ")
    except (EOFError, KeyboardInterrupt):
        raise TcsessionError(f"{inv.path}: no sudo password given for {users}; type it at the prompt "
                             f"or set {SUDO_PASSWORD_ENV}") from None


def fingerprint(key: Any) -> str:
    """A paramiko key's fingerprint as `ssh-keygen -lf` shows it: SHA256:<base64, no padding>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _keyscan_type(key_name: str) -> str:
    return {"ssh-ed25519": "ed25519", "ssh-dss": "dsa"}.get(
        key_name, "ecdsa" if key_name.startswith("ecdsa") else "rsa" if "rsa" in key_name else key_name)


@dataclasses.dataclass(frozen=True)
class KnownHost:
    line: int
    names: tuple[str, ...]
    key: Any  # paramiko.PKey


def read_known_hosts(path: Path, inv_path: Path | str = "") -> list[KnownHost]:
    """Every host key line of an OpenSSH known_hosts file; a line paramiko cannot read (which
    would refuse every host) is TcsessionError naming the file and the line."""
    from paramiko.hostkeys import HostKeyEntry  # noqa: PLC0415

    quiet_paramiko()
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise TcsessionError(f"{path}: is a directory; point known_hosts in {inv_path or 'the inventory'} "
                             f"at the known_hosts file") from None
    except OSError as e:
        raise TcsessionError(f"{path}: cannot read known_hosts ({e.strerror}); check its permissions") from None
    entries = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        fix = f"fix or delete line {n} (sed -i '{n}d' {path}) and add the host's key again"
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise TcsessionError(f"{path} line {n}: not UTF-8 text, not a host key; {fix}") from None
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if fields[0].startswith("@"):  # @cert-authority / @revoked: OpenSSH's, paramiko ignores them
            continue
        if len(fields) < 3:
            raise TcsessionError(f"{path} line {n}: has {len(fields)} field(s), a host key line has "
                                 f"three (hosts, key type, base64 key); {fix}")
        try:
            entry = HostKeyEntry.from_line(line, n)
        except Exception as e:  # noqa: BLE001 (InvalidHostKey, SSHException, ValueError from the key classes)
            why = " ".join(str(e).split())[:80] or type(e).__name__
            raise TcsessionError(f"{path} line {n}: not a valid host key ({why}); {fix}") from None
        if entry is not None and entry.key is not None:  # None: a key type paramiko does not know
            entries.append(KnownHost(n, tuple(entry.hostnames), entry.key))
    return entries


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One SSH server on the way to a host: the host itself, or a jump host before it."""

    label: str  # "tomcat1 (10.0.0.12:22)" / "jump host bastion (192.0.2.5:22)"
    address: str
    port: int
    known_hosts: Path
    via: Any = None  # the Hop just before it (keyscan must run there), None: direct

    @property
    def known_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"

    def keyscan(self, t: str) -> str:
        scan = f"ssh-keyscan -p {self.port} -t {t} {self.address}"
        if self.via is None:
            return scan
        return f"ssh -p {self.via.port} {self.via.user}@{self.via.host} {scan}"


def host_endpoint(host: Host) -> Endpoint:
    return Endpoint(f"{host.name} ({host.ssh_address}:{host.ssh.port})", host.ssh_address, host.ssh.port,
                    host.ssh.known_hosts, host.ssh.jump[-1] if host.ssh.jump else None)


def hop_endpoint(host: Host, i: int) -> Endpoint:
    hop = host.ssh.jump[i]
    return Endpoint(f"jump host {hop.name} ({hop.host}:{hop.port}) of {host.name}", hop.host, hop.port,
                    host.ssh.known_hosts, host.ssh.jump[i - 1] if i else None)


def _known_name(host: Host) -> str:
    return host_endpoint(host).known_name


def _names_match(entry: KnownHost, name: str) -> bool:
    import paramiko  # noqa: PLC0415

    for n in entry.names:
        if n == name or (n.startswith("|1|") and paramiko.HostKeys.hash_host(name, n) == n):
            return True
    return False


def unknown_key_message(host: Host | Endpoint, key: Any) -> str:
    e = host if isinstance(host, Endpoint) else host_endpoint(host)
    kh, name, t = e.known_hosts, e.known_name, _keyscan_type(key.get_name())
    return (f"{e.label}: host key not in {kh}: the host sent "
            f"{key.get_name()} {fingerprint(key)}; refusing to connect. Check it on the host "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_{t}_key.pub must show {fingerprint(key)}), then add it: "
            f"{e.keyscan(t)} >> {kh} "
            f"(ssh-keygen -lF '{name}' -f {kh} shows what was added)")


def changed_key_message(host: Host | Endpoint, got: Any, expected: Any, line: int | None) -> str:
    e = host if isinstance(host, Endpoint) else host_endpoint(host)
    kh, name, t = e.known_hosts, e.known_name, _keyscan_type(got.get_name())
    where = f"{kh} line {line}" if line else str(kh)
    return (f"{e.label}: host key CHANGED: {where} has "
            f"{expected.get_name()} {fingerprint(expected)}, the host sent {got.get_name()} {fingerprint(got)}; "
            f"refusing to connect (a reinstalled host, or someone in between). Check it on the host "
            f"(ssh-keygen -lf /etc/ssh/ssh_host_{t}_key.pub must show {fingerprint(got)}), then replace it: "
            f"ssh-keygen -R '{name}' -f {kh} && {e.keyscan(t)} >> {kh}")


def load_private_key(path: Path, agent: bool, inv_path: Path | str = "") -> Any:
    """The paramiko key in `path`, or None when it is encrypted and the agent is to be used;
    TcsessionError (one line) when paramiko cannot load it."""
    import paramiko  # noqa: PLC0415

    try:
        return paramiko.PKey.from_path(str(path))
    except (paramiko.PasswordRequiredException, TypeError) as e:  # paramiko 3+: TypeError "password-protected"
        if not isinstance(e, paramiko.PasswordRequiredException) and "password" not in str(e).lower():
            why = " ".join(str(e).split())[:100] or type(e).__name__
            raise TcsessionError(f"{inv_path}: key {path} cannot be loaded ({why}); give an OpenSSH private key "
                                 f"(ssh-keygen -t ed25519 -f {path}) or use agent = true") from None
        if agent:
            return None
        raise TcsessionError(f"{inv_path}: key {path} is encrypted with a passphrase, which tcsession never "
                             f"asks for; load it into the agent (ssh-add {path}) and set agent = true") from None
    except OSError as e:
        raise TcsessionError(f"{inv_path}: key {path}: cannot read it ({e.strerror}); check its permissions") from None
    except Exception as e:  # paramiko.SSHException, ValueError, UnknownKeyType, cryptography errors
        why = " ".join(str(e).split())[:100] or type(e).__name__
        raise TcsessionError(f"{inv_path}: key {path} cannot be loaded ({why}); give an OpenSSH private key "
                             f"(ssh-keygen -t ed25519 -f {path}) or use agent = true") from None


class Remote:
    """Connections to an inventory's hosts, opened on first use and reused until `close`.

    Everything that can be refused before connecting is checked when it is made (`prepare`):
    the sudo password asked once, the key files loaded, the known_hosts files read; so no
    thread ever prompts, and a bad file stops everything with one line before any host is
    touched."""

    def __init__(self, inv: Inventory, max_workers: int | None = None):
        self.inv = inv
        self._conns: dict[str, object] = {}
        self._gateways: dict[tuple, object] = {}  # jump host connections, shared by the hosts behind them
        self._gateway_locks: dict[tuple, threading.Lock] = {}
        self._chains: dict[str, list] = {}  # host name -> its jump host connections, first hop first
        self._warming: dict[str, Any] = {}  # host name -> the future of a connection being opened (connect_all)
        self._sudo_password: str | None = None
        self._keys: dict[Path, Any] = {}
        self._known: dict[Path, list[KnownHost]] = {}
        self._prepared = False
        self._lock = threading.Lock()
        self.commands = 0  # SSH commands issued (for the benchmarks)
        self.prepare()
        # At most [ssh] max_parallel hosts are worked on (connected to, commands running) at once.
        self.max_parallel = max_workers or inv.max_parallel
        self._pool = ThreadPoolExecutor(max_workers=self.max_parallel)

    def prepare(self) -> None:
        """Ask the sudo password (once), load key files, read known_hosts files: before any
        connection and before any thread. Idempotent; `Remote(inv)` calls it."""
        if self._prepared:
            return
        quiet_paramiko()
        self._sudo_password = ask_sudo_password(self.inv)
        for h in self.inv.hosts:
            ssh = h.ssh
            for key in {ssh.key} | {hop.key for hop in ssh.jump}:
                if key is not None and key not in self._keys and key.is_file():
                    self._keys[key] = load_private_key(key, ssh.agent, self.inv.path)
            if ssh.agent and ssh.key is None and not os.environ.get("SSH_AUTH_SOCK"):
                raise TcsessionError(
                    f"{self.inv.path}: [{h.role}.{h.name}] agent = true but no ssh-agent is running here "
                    "(SSH_AUTH_SOCK is not set); start one and add the key (eval $(ssh-agent) && ssh-add KEY), "
                    'or set key = "~/.ssh/id_ed25519"')
            if ssh.known_hosts not in self._known and ssh.known_hosts.exists():
                self._known[ssh.known_hosts] = read_known_hosts(ssh.known_hosts, self.inv.path)
        self._prepared = True

    # ------------------------------------------------------------ connections

    def _strict_connection(self, host: Host, address: str, user: str, port: int, key: Path | None,
                           gateway: Any = None):
        """A Fabric Connection whose client knows only the keys of the host's known_hosts file and
        refuses any other (Fabric's own default would add unknown keys)."""
        import fabric  # noqa: PLC0415 (keep `inv --list` and pure code free of paramiko)
        import paramiko  # noqa: PLC0415

        ssh = host.ssh
        kwargs: dict = {"allow_agent": ssh.agent, "look_for_keys": False,
                        "banner_timeout": ssh.connect_timeout,
                        "auth_timeout": ssh.connect_timeout}
        if key is not None:
            pkey = self._keys.get(key)
            if pkey is not None:
                kwargs["pkey"] = pkey
            elif not ssh.agent:
                kwargs["key_filename"] = str(key)
        # load_ssh_configs False: the SSH config was read into the inventory (tcsession.sshconfig);
        # Fabric would also make gateways of its own from ProxyJump, with its permissive host keys.
        config = fabric.Config(overrides={"load_ssh_configs": False,
                                          "run": {"hide": True, "warn": True},
                                          "runners": {"remote": _prompt_runner()}})
        conn = fabric.Connection(address, user=user, port=port, config=config, gateway=gateway or False,
                                 connect_timeout=ssh.connect_timeout, connect_kwargs=kwargs)
        conn.client = paramiko.SSHClient()
        known = conn.client.get_host_keys()  # the lines read_known_hosts checked, not a second parse
        for entry in self._known[ssh.known_hosts]:
            for name in entry.names:
                known.add(name, entry.key.get_name(), entry.key)
        conn.client.set_missing_host_key_policy(_refuse_policy())
        return conn

    def _gateway_chain(self, host: Host) -> list[tuple[tuple, Any]]:
        """The host's jump host connections, first hop first, made once and shared (by chain)."""
        chain, gateway = [], None
        for i, hop in enumerate(host.ssh.jump):
            ident = tuple((h.host, h.port, h.user, str(h.key), str(host.ssh.known_hosts))
                          for h in host.ssh.jump[:i + 1])
            conn = self._gateways.get(ident)
            if conn is None:
                conn = self._strict_connection(host, hop.host, hop.user, hop.port, hop.key, gateway)
                self._gateways[ident] = conn
                self._gateway_locks[ident] = threading.Lock()
            chain.append((ident, conn))
            gateway = conn
        return chain

    def _connection(self, host: Host):
        with self._lock:
            conn = self._conns.get(host.name)
            if conn is not None:
                return conn
            ssh = host.ssh
            if not ssh.known_hosts.exists():
                raise TcsessionError(
                    f"{self.inv.path}: [{host.role}.{host.name}] known_hosts {ssh.known_hosts} does "
                    f"not exist; add the host's key ({host_endpoint(host).keyscan('ed25519')} after "
                    "checking its fingerprint) or point known_hosts at the right file")
            if ssh.known_hosts not in self._known:
                self._known[ssh.known_hosts] = read_known_hosts(ssh.known_hosts, self.inv.path)
            chain = self._gateway_chain(host)
            conn = self._strict_connection(host, host.ssh_address, ssh.user, ssh.port, ssh.key,
                                           chain[-1][1] if chain else None)
            self._chains[host.name] = chain
            self._conns[host.name] = conn
            return conn

    def _open_one(self, conn: Any, endpoint: Endpoint, host: Host, user: str, key: Path | None) -> str | None:
        """Open one connection (a jump host's or the host's); None, or the one-line reason it failed."""
        import paramiko  # noqa: PLC0415

        where = endpoint.label
        try:
            if not conn.gateway:  # a hop's channel rides on its first hop's socket, made here too
                conn.connect_kwargs["sock"] = nodelay_socket(endpoint.address, endpoint.port, host.ssh.connect_timeout)
            conn.open()
            return None
        except _UnknownHostKey as e:
            msg = unknown_key_message(endpoint, e.key)
        except paramiko.BadHostKeyException as e:
            line = next((k.line for k in self._known.get(endpoint.known_hosts, [])
                         if _names_match(k, endpoint.known_name) and k.key == e.expected_key), None)
            msg = changed_key_message(endpoint, e.key, e.expected_key, line)
        except paramiko.AuthenticationException:
            how = f"key {key}" if key else "the agent's keys"
            msg = (f"{where}: user {user} was refused with {how}; put its public key in "
                   f"~{user}/.ssh/authorized_keys on the host, or fix user/key in {self.inv.path}")
        except paramiko.ChannelException as e:  # the jump host could not reach this one
            msg = (f"{where}: the jump host {host.ssh.jump[-1].name if host.ssh.jump else ''} could not "
                   f"connect to it ({e.text}); is sshd listening there, and is the address the one the jump "
                   "host reaches it by?")
        except paramiko.SSHException as e:
            text = " ".join(str(e).split())
            if any(m in text for m in ("banner", "No existing session", "Negotiation failed")):
                msg = (f"{where}: no SSH answer (banner) within {host.ssh.connect_timeout:g} s; is sshd "
                       f"listening on port {endpoint.port}? Check the address and port in {self.inv.path}")
            else:
                msg = f"{where}: SSH failed: {text[:200]}"
        except (socket.timeout, TimeoutError):
            msg = f"{where}: connection timed out after {host.ssh.connect_timeout:g} s"
        except EOFError:
            msg = f"{where}: the connection was closed during the SSH handshake; is sshd on port {endpoint.port}?"
        except paramiko.ssh_exception.NoValidConnectionsError as e:
            first = next(iter(e.errors.values()), e)
            msg = f"{where}: cannot connect: {getattr(first, 'strerror', None) or first}"
        except OSError as e:
            msg = f"{where}: cannot connect: {e.strerror or e}"
        try:
            conn.client.close()
        except Exception:  # noqa: BLE001 (closing a half-open client must not hide the reason)
            pass
        return msg

    def connect_all(self) -> None:
        """Open every host's connection now, in parallel, and return when each is open or has
        failed; a connection that failed fails its host's first command with its one line, as if
        it had been opened then.

        Why wait here: once a host has accepted the key, its sshd sets up the login session (PAM:
        pam_systemd, logind, the session scope) before it answers the first command, about 60 ms
        in the lab, with nothing for this side to do. The caller's next work (the deploy's imports,
        its planning) fills that time. Run during the handshakes instead, that work took the CPU
        (two cores, the GIL) from them: opening 3 connections took 60 to 75 ms instead of 30, and
        a no-op deploy 40 ms longer (measured on the lab)."""
        with self._lock:
            for h in self.inv.hosts:
                if h.name not in self._warming and h.name not in self._conns:
                    self._warming[h.name] = self._pool.submit(self._open_now, h)
            opening = list(self._warming.values())
        concurrent.futures.wait(opening)

    def _open(self, host: Host):
        with self._lock:
            warming = self._warming.pop(host.name, None)
        if warming is not None:
            return warming.result()  # its connection, or the TcsessionError that opening it raised
        return self._open_now(host)

    def _open_now(self, host: Host):
        conn = self._connection(host)
        if conn.is_connected:
            return conn
        msg = None
        for i, (ident, gateway) in enumerate(self._chains.get(host.name, ())):
            with self._gateway_locks[ident]:  # hosts behind one jump host share its connection
                if gateway.is_connected:
                    continue
                hop = host.ssh.jump[i]
                msg = self._open_one(gateway, hop_endpoint(host, i), host, hop.user, hop.key)
            if msg:
                break
        if msg is None:
            msg = self._open_one(conn, host_endpoint(host), host, host.ssh.user, host.ssh.key)
            if msg is None:
                return conn
        with self._lock:
            self._conns.pop(host.name, None)
        raise TcsessionError(msg)

    def close(self) -> None:
        for warming in self._warming.values():  # never used: closed once open (if it ever opens)
            if not warming.cancel():
                warming.add_done_callback(lambda f: f.exception() is None and f.result().close())
        self._warming.clear()
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        for conn in reversed(list(self._gateways.values())):  # the hops nearest the hosts first
            conn.close()
        self._gateways.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ commands

    def _wrap(self, host: Host, command: str) -> str:
        if host.ssh.user == "root" or not host.ssh.sudo:
            return command
        return shell.sudo(command, host.ssh.nopasswd)

    def _sudo_input(self, host: Host) -> str | None:
        if host.ssh.user == "root" or not host.ssh.sudo or host.ssh.nopasswd:
            return None
        if self._sudo_password is None:  # prepare() asked; never prompt from a thread
            raise TcsessionError(f"{host.name}: no sudo password (prepare() was not called); this is a tcsession bug")
        return self._sudo_password + "\n"

    def run(self, host: Host, command: str, stdin: str | None = None,
            timeout: float | None = None) -> Result:
        """Run a shell command on a host; never raises for a failing command or host.

        A command longer than Linux takes as one argument (a script carrying jars; sshd runs
        `sh -c <command>`) is written to a root-only temporary file on the host, then run there."""
        started = time.monotonic()
        if len(command) > MAX_INLINE_COMMAND:
            return self._run_long(host, command, stdin, timeout, started)
        return self._exec(host, command, command, stdin, timeout, started)

    def _run_long(self, host: Host, command: str, stdin: str | None, timeout: float | None,
                  started: float) -> Result:
        made = self._exec(host, shell.make_temp_file(), command, None, timeout, started)
        if not made.ok:
            return made
        path = made.stdout.strip()
        i = 0
        while i < len(command):
            step = MAX_WIRE * 4 // 5
            while True:  # quoting grows a piece, and sudo's `sh -c` quotes it once more
                wire = shell.append_to(path, command[i:i + step])
                if len(self._wrap(host, wire)) < MAX_WIRE or step < 1024:
                    break
                step //= 2
            i += step
            part = self._exec(host, wire, command, None, timeout, started)
            if not part.ok:
                self._exec(host, shell.remove(path), command, None, timeout, started)
                return part
        return self._exec(host, shell.run_file(path, bool(stdin)),
                          command, stdin, timeout, started)

    def _exec(self, host: Host, wire: str, command: str, stdin: str | None, timeout: float | None,
              started: float) -> Result:
        try:
            conn = self._open(host)
            feed = (self._sudo_input(host) or "") + (stdin or "")
            self.commands += 1
            r = conn.run(self._wrap(host, wire), in_stream=io.StringIO(feed) if feed else False,
                         timeout=timeout or host.ssh.command_timeout)
            return Result(host.name, command, r.exited, r.stdout, r.stderr,
                          error=self._sudo_refused(host, r.exited, r.stderr),
                          seconds=time.monotonic() - started)
        except TcsessionError as e:
            return Result(host.name, command, None, error=str(e),
                          seconds=time.monotonic() - started)
        except Exception as e:  # a dropped connection, a timeout: report, never crash the run
            self._conns.pop(host.name, None)
            where = f"{host.name} ({host.ssh_address})"
            if type(e).__name__ == "CommandTimedOut":  # Invoke's timer closed the channel
                limit = timeout or host.ssh.command_timeout
                error = (f"{where}: timed out: the command did not finish within {limit:g} s "
                         f"([ssh] command_timeout in {self.inv.path})")
            else:
                kind = "timed out" if "Timeout" in type(e).__name__ else type(e).__name__
                error = f"{where}: {kind}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
            return Result(host.name, command, None, error=error, seconds=time.monotonic() - started)

    def _sudo_refused(self, host: Host, exited: int, stderr: str) -> str | None:
        """One line when sudo itself refused (not the command): what it said and the fix."""
        if exited == 0 or host.ssh.user == "root" or not host.ssh.sudo:
            return None
        said = next((l.strip() for l in stderr.splitlines() if l.startswith("sudo: ")), "")
        u, where = host.ssh.user, f"{host.name} ({host.ssh_address})"
        if "incorrect password" in said or "no password was provided" in said:
            return (f"{where}: sudo refused the password for {u}; give the right one "
                    f"({SUDO_PASSWORD_ENV} or the prompt)")
        if "a password is required" in said:
            return (f"{where}: sudo wants a password for {u}, but the inventory says sudo_nopasswd = true; "
                    f"remove sudo_nopasswd (then {SUDO_PASSWORD_ENV} or a prompt gives it) or give {u} "
                    "NOPASSWD in sudoers")
        if "not in the sudoers file" in said or "is not allowed to run sudo" in said:
            return f"{where}: {u} may not use sudo there ({said[6:]}); add {u} to sudoers or log in as root"
        if exited == 127 and re.search(r"\bsudo: (command )?not found", stderr):
            return f"{where}: sudo is not installed there; install it (apt-get install sudo) or log in as root"
        return None

    def run_all(self, hosts: Iterable[Host], command: str | Callable[[Host], str],
                stdin: str | None = None) -> dict[str, Result]:
        """The same (or a per-host) command on many hosts in parallel; results by host name."""
        hosts = list(hosts)
        futures = {h.name: self._pool.submit(
            self.run, h, command(h) if callable(command) else command, stdin) for h in hosts}
        return {name: f.result() for name, f in futures.items()}

    def map(self, hosts: Iterable[Host], fn: Callable[[Host], T]) -> dict[str, T]:
        """Call fn(host) for every host in parallel (fn uses this Remote); results by host name."""
        futures = {h.name: self._pool.submit(fn, h) for h in hosts}
        return {name: f.result() for name, f in futures.items()}


@functools.cache
def _prompt_runner():
    """Fabric's runner, told at once when a command exits. Invoke's `Runner.wait` looks every
    `input_sleep` (10 ms) and sleeps first: every command took at least 10 ms more than it ran
    (`true` on an open connection 11.2 ms; 2.7 ms so, measured on the lab). This one waits on the
    channel's exit-status event (paramiko sets it when the exit status arrives; `recv_exit_status`
    waits on it too), still looking at the reader threads every `input_sleep`, as Invoke does; and
    a command stopped at its timeout is always reported so."""
    from fabric.runners import Remote as FabricRemote  # noqa: PLC0415

    class PromptRunner(FabricRemote):
        def wait(self) -> None:
            while not (self.process_is_finished or self.has_dead_threads):
                self.channel.status_event.wait(self.input_sleep)

        killed = False

        def kill(self) -> None:
            """A command past its timeout: its channel closed (Invoke's timer thread). Marked
            first: `wait` ends as soon as the channel is closed, and Invoke's `timed_out` (the timer
            thread no longer alive) could still be false then, the command reported as exit -1.
            When the connection went down meanwhile, there is nothing to close, and no traceback."""
            self.killed = True
            try:
                super().kill()
            except (EOFError, OSError):
                pass

        @property
        def timed_out(self) -> bool:
            return self.killed or super().timed_out

    return PromptRunner


def nodelay_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to an SSH server with Nagle's algorithm off, as OpenSSH's client does.
    Paramiko leaves it on, and an SSH command is a few small writes each way (channel open, exec,
    EOF, exit status): with Nagle on, each command on an open connection waited for the peer's
    delayed ACK, about 40 ms on Linux (`true` took 45 ms; 5 ms with TCP_NODELAY, measured on the lab)."""
    sock = socket.create_connection((address, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: Any):
        super().__init__(hostname)
        self.key = key


def _refuse_policy():
    """paramiko's RejectPolicy, keeping the key so the refusal can show its fingerprint."""
    import paramiko  # noqa: PLC0415

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            raise _UnknownHostKey(hostname, key)

    return RefuseUnknown()
