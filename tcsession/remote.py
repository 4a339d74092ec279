"""The one module that talks to Fabric: connections, commands, per-host results.

Everything else hands this module plain data (a host, a shell script, bytes) and gets plain
data back (`Result`). Host keys are always checked against the inventory's known_hosts file
(paramiko's RejectPolicy: an unknown or changed key refuses the connection).
"""

from __future__ import annotations

import dataclasses
import getpass
import io
import os
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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


class Remote:
    """Connections to an inventory's hosts, opened on first use and reused until `close`."""

    def __init__(self, inv: Inventory, max_workers: int = 16):
        self.inv = inv
        self._conns: dict[str, object] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers)
        self._sudo_password: str | None = None
        self.commands = 0  # SSH commands issued (for the benchmarks)

    # ------------------------------------------------------------ connections

    def _connection(self, host: Host):
        conn = self._conns.get(host.name)
        if conn is not None:
            return conn
        import fabric  # noqa: PLC0415 (keep `inv --list` and pure code free of paramiko)
        import paramiko  # noqa: PLC0415

        ssh = host.ssh
        if not ssh.known_hosts.exists():
            raise TcsessionError(
                f"{self.inv.path}: [{host.role}.{host.name}] known_hosts {ssh.known_hosts} does "
                f"not exist; add the host's key (ssh-keyscan -p {ssh.port} {host.address} after "
                "checking its fingerprint) or point known_hosts at the right file")
        kwargs: dict = {"allow_agent": ssh.agent, "look_for_keys": False,
                        "banner_timeout": ssh.connect_timeout,
                        "auth_timeout": ssh.connect_timeout}
        if ssh.key is not None:
            kwargs["key_filename"] = str(ssh.key)
        config = fabric.Config(overrides={"load_ssh_configs": False,
                                          "run": {"hide": True, "warn": True}})
        conn = fabric.Connection(host.address, user=ssh.user, port=ssh.port, config=config,
                                 connect_timeout=ssh.connect_timeout, connect_kwargs=kwargs)
        conn.client = paramiko.SSHClient()
        conn.client.load_host_keys(str(ssh.known_hosts))
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._conns[host.name] = conn
        return conn

    def _open(self, host: Host):
        import paramiko  # noqa: PLC0415

        conn = self._connection(host)
        try:
            conn.open()
        except paramiko.SSHException as e:
            msg = str(e)
            if "not found in known_hosts" in msg or "Server " in msg and "known_hosts" in msg:
                raise TcsessionError(
                    f"{host.name} ({host.address}): host key not in {host.ssh.known_hosts}; "
                    "refusing to connect (check the key, then add it to known_hosts)") from None
            raise TcsessionError(f"{host.name} ({host.address}): SSH failed: {msg}") from None
        except (socket.timeout, TimeoutError):
            raise TcsessionError(f"{host.name} ({host.address}:{host.ssh.port}): connection "
                                 f"timed out after {host.ssh.connect_timeout:g} s") from None
        except OSError as e:
            raise TcsessionError(f"{host.name} ({host.address}:{host.ssh.port}): "
                                 f"cannot connect: {e.strerror or e}") from None
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ commands

    def _wrap(self, host: Host, command: str) -> str:
        if host.ssh.user == "root" or not host.ssh.sudo:
            return command
        return shell.sudo(command)

    def _sudo_input(self, host: Host) -> str | None:
        if host.ssh.user == "root" or not host.ssh.sudo:
            return None
        if self._sudo_password is None:
            self._sudo_password = os.environ.get(SUDO_PASSWORD_ENV)
            if self._sudo_password is None:
                self._sudo_password = getpass.getpass(f"sudo password for {host.ssh.user}: ")
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
                          seconds=time.monotonic() - started)
        except TcsessionError as e:
            return Result(host.name, command, None, error=str(e),
                          seconds=time.monotonic() - started)
        except Exception as e:  # a dropped connection, a timeout: report, never crash the run
            self._conns.pop(host.name, None)
            kind = "timed out" if "Timeout" in type(e).__name__ else type(e).__name__
            return Result(host.name, command, None,
                          error=f"{host.name} ({host.address}): {kind}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": "),
                          seconds=time.monotonic() - started)

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
