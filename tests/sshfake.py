"""Local stand-ins for SSH servers, on 127.0.0.1 only: a paramiko server with its own host key
(runs `exec` requests as canned replies), a port that accepts and never speaks, a port that
answers something else than SSH. Bounded: every listener stops with its context."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tcsession.inventory import Host, Inventory, Ssh, parse_inventory


def write_key(path: Path, passphrase: bytes | None = None) -> Path:
    """An OpenSSH ed25519 private key file, mode 0600."""
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, enc))
    path.chmod(0o600)
    return path


def pkey(path: Path) -> paramiko.PKey:
    return paramiko.PKey.from_path(str(path))


def ran_reply(channel, command: bytes) -> None:
    """The canned reply to an exec request: "ran: COMMAND", exit status 0."""
    time.sleep(0.05)  # after paramiko has answered the exec request
    channel.sendall(b"ran: " + command + b"\n")
    channel.send_exit_status(0)
    channel.close()


class _Server(paramiko.ServerInterface):
    def __init__(self, client_key: paramiko.PKey | None, reply=ran_reply):
        self.client_key = client_key
        self.reply = reply

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = self.client_key is not None and key == self.client_key
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        threading.Thread(target=self.reply, args=(channel, command), daemon=True).start()
        return True


class Listener:
    """A TCP listener on 127.0.0.1: `behaviour(conn)` per accepted connection, in a thread."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._open: list = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            self._open.append(conn)
            try:
                kept = self.behaviour(conn)
                if kept is not None:
                    self._open.append(kept)
            except Exception:  # noqa: BLE001 (a test server: the client side is what is tested)
                pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        for o in self._open:
            try:
                o.close()
            except Exception:  # noqa: BLE001
                pass
        self.sock.close()


def ssh_server(host_key: paramiko.PKey, client_key: paramiko.PKey | None, reply=ran_reply) -> Listener:
    """`reply(channel, command)`: how each exec request is answered (in a thread of its own)."""
    def serve(conn):
        t = paramiko.Transport(conn)
        t.add_server_key(host_key)
        t.start_server(server=_Server(client_key, reply))
        return t

    return Listener(serve)


def silent_port() -> Listener:
    """Accepts and sends nothing (a port that never sends an SSH banner)."""
    return Listener(lambda conn: None)


def speaking_port(data: bytes) -> Listener:
    def speak(conn):
        conn.sendall(data)
    return Listener(speak)


GOOD = ('[ssh]\nkey = "id_test"\n[nginx.web]\naddress = "192.0.2.10"\n'
        '[tomcat.tc1]\naddress = "192.0.2.11"\n[tomcat.tc2]\naddress = "192.0.2.12"\n')


def local_inventory(tmp_path: Path, port: int, known_hosts: Path, key: Path | None, *,
                    user: str = "root", sudo: bool = False, agent: bool = False,
                    timeout: float = 2.0) -> Inventory:
    """A valid inventory whose hosts all point at 127.0.0.1:port. The inventory refuses
    loopback addresses (by design), so the hosts are swapped in after parsing."""
    write_key(tmp_path / "id_test")
    inv = parse_inventory(GOOD, tmp_path / "hosts.toml")
    ssh = Ssh(user=user, port=port, key=key, agent=agent, known_hosts=known_hosts, sudo=sudo,
              connect_timeout=timeout, command_timeout=5.0)
    hosts = tuple(dataclasses.replace(h, address="127.0.0.1", ssh=ssh) for h in inv.hosts)
    return dataclasses.replace(inv, hosts=hosts)


def known_line(port: int, key: paramiko.PKey) -> str:
    return f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n"
