"""tcsession.remote against local stand-ins (127.0.0.1 only, no lab): host keys unknown,
changed or damaged in known_hosts, a port that never sends a banner, refused logins, the sudo
password asked once before any thread. Every failure is one line naming host or file and the
fix, and no traceback is printed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tcsession.remote as remote_mod
from sshfake import known_line, local_inventory, pkey, silent_port, speaking_port, ssh_server, write_key
from tcsession.errors import TcsessionError
from tcsession.remote import Remote, fingerprint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def keys(tmp_path):
    host = pkey(write_key(tmp_path / "host_key"))
    client_path = write_key(tmp_path / "client_key")
    return host, client_path, pkey(client_path)


def run_once(inv, command="true"):
    with Remote(inv) as r:
        return r.run(inv.hosts[0], command)


def one_line(msg: str) -> str:
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def test_known_host_key_connects_and_runs(tmp_path, keys):
    host_key, client_path, client_key = keys
    with ssh_server(host_key, client_key) as srv:
        kh = tmp_path / "known_hosts"
        kh.write_text("# comment\n\n" + known_line(srv.port, host_key))
        r = run_once(local_inventory(tmp_path, srv.port, kh, client_path), "echo hi")
    assert r.ok, r.why()
    assert r.stdout == "ran: echo hi\n"


def test_unknown_host_key_shows_fingerprint_and_how_to_add(tmp_path, keys):
    host_key, client_path, client_key = keys
    with ssh_server(host_key, client_key) as srv:
        kh = tmp_path / "known_hosts"
        other = pkey(write_key(tmp_path / "other"))
        kh.write_text(f"192.0.2.99 {other.get_name()} {other.get_base64()}\n")
        r = run_once(local_inventory(tmp_path, srv.port, kh, client_path))
    msg = one_line(r.error)
    fp = fingerprint(host_key)
    assert msg.startswith(f"web (127.0.0.1:{srv.port}): host key not in {kh}")
    assert f"ssh-ed25519 {fp}" in msg and "refusing to connect" in msg
    assert f"ssh-keyscan -p {srv.port} -t ed25519 127.0.0.1 >> {kh}" in msg
    assert "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" in msg
    if shutil.which("ssh-keygen"):  # the fingerprint is the one OpenSSH shows
        pub = tmp_path / "host.pub"
        pub.write_text(f"{host_key.get_name()} {host_key.get_base64()}\n")
        out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout
        assert out.split()[1] == fp


def test_changed_host_key_names_the_line_and_both_fingerprints(tmp_path, keys):
    host_key, client_path, client_key = keys
    old = pkey(write_key(tmp_path / "old_host_key"))
    with ssh_server(host_key, client_key) as srv:
        kh = tmp_path / "known_hosts"
        kh.write_text("# first\n192.0.2.1 " + f"{old.get_name()} {old.get_base64()}\n" + known_line(srv.port, old))
        r = run_once(local_inventory(tmp_path, srv.port, kh, client_path))
    msg = one_line(r.error)
    assert f"host key CHANGED: {kh} line 3 has ssh-ed25519 {fingerprint(old)}" in msg
    assert f"the host sent ssh-ed25519 {fingerprint(host_key)}" in msg
    assert f"ssh-keygen -R '[127.0.0.1]:{srv.port}' -f {kh}" in msg


@pytest.mark.parametrize("content,line,fragment", [
    (b"h ssh-ed25519 AAAA!!notbase64\n", 1, "not a valid host key"),
    (b"# ok\nh ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n", 2, "not a valid host key"),  # too short a key
    (b"\n\nh ssh-ed25519\n", 3, "has 2 field(s)"),
    (b"h ssh-rsa AAAAB3NzaC1yc2E=\n", 1, "not a valid host key"),
    (b"ok ssh-foo AAAA\n\xff\xfe garbage\n", 2, "not UTF-8"),
], ids=["bad-base64", "short-key", "two-fields", "rsa-without-numbers", "binary"])
def test_damaged_known_hosts_names_file_and_line(tmp_path, keys, content, line, fragment):
    _, client_path, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_bytes(content)
    with silent_port() as port:  # nothing may connect: the file is refused first
        with pytest.raises(TcsessionError) as info:
            Remote(local_inventory(tmp_path, port.port, kh, client_path))
        assert port.accepted == 0
    msg = one_line(str(info.value))
    assert msg.startswith(f"{kh} line {line}: ") and fragment in msg
    assert f"sed -i '{line}d' {kh}" in msg


def test_known_hosts_directory(tmp_path, keys):
    _, client_path, _ = keys
    kh = tmp_path / "kh.d"
    kh.mkdir()
    with pytest.raises(TcsessionError) as info:
        Remote(local_inventory(tmp_path, 22, kh, client_path))
    assert one_line(str(info.value)).startswith(f"{kh}: is a directory; point known_hosts")


def refused_inventory(tmp_path, client_path):
    """An inventory whose hosts are at a local port nothing listens on (just closed), and that port."""
    with silent_port() as port:
        closed = port.port
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    return local_inventory(tmp_path, closed, kh, client_path), closed


def test_connection_refused_is_one_line(tmp_path, keys):
    _, client_path, _ = keys
    inv, closed = refused_inventory(tmp_path, client_path)
    r = run_once(inv)
    assert one_line(r.error) == f"web (127.0.0.1:{closed}): cannot connect: Connection refused"


def test_login_refused_names_user_and_key(tmp_path, keys):
    host_key, client_path, _ = keys
    with ssh_server(host_key, client_key=None) as srv:  # accepts no key
        kh = tmp_path / "known_hosts"
        kh.write_text(known_line(srv.port, host_key))
        r = run_once(local_inventory(tmp_path, srv.port, kh, client_path))
    msg = one_line(r.error)
    assert f"user root was refused with key {client_path}" in msg and "authorized_keys" in msg


NO_TRACEBACK = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from sshfake import local_inventory
    from tcsession.remote import Remote
    inv = local_inventory(Path({tmp!r}), {port}, Path({kh!r}), Path({key!r}), timeout=1.0)
    with Remote(inv) as r:
        print(r.run(inv.hosts[0], "true").error)
""")


@pytest.mark.parametrize("speaks", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n", b"SSH-2.0-x\r\n"],
                         ids=["silent", "http", "banner-then-nothing"])
def test_port_that_is_not_ssh_prints_no_traceback(tmp_path, keys, speaks):
    """paramiko's own logging printed three tracebacks for a port that never sends a banner."""
    _, client_path, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with (silent_port() if speaks is None else speaking_port(speaks)) as port:
        code = NO_TRACEBACK.format(tests=str(ROOT / "tests"), tmp=str(tmp_path), port=port.port, kh=str(kh),
                                   key=str(client_path))
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip() == "", p.stderr
    out = one_line(p.stdout.strip())
    assert out.startswith(f"web (127.0.0.1:{port.port}): ")
    if speaks is None:
        assert "no SSH answer (banner) within 1 s" in out and "port" in out


def test_sudo_without_terminal_or_env_is_one_line_before_connecting(tmp_path, keys):
    _, client_path, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from pathlib import Path
        from sshfake import local_inventory
        from tcsession.errors import TcsessionError
        from tcsession.remote import Remote
        inv = local_inventory(Path({str(tmp_path)!r}), int(sys.argv[1]), Path({str(kh)!r}),
                              Path({str(client_path)!r}), user="ops", sudo=True)
        try:
            Remote(inv)
        except TcsessionError as e:
            print(e)
    """)
    env = {k: v for k, v in os.environ.items() if k != remote_mod.SUDO_PASSWORD_ENV}
    with silent_port() as port:
        p = subprocess.run([sys.executable, "-c", code, str(port.port)], capture_output=True, text=True,
                           timeout=30, stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=ROOT)
        assert port.accepted == 0
    assert "Traceback" not in p.stderr, p.stderr
    msg = one_line(p.stdout.strip())
    assert "web, tc1, tc2: sudo = true (user ops) needs a password and there is no terminal" in msg
    assert "set TCSESSION_SUDO_PASSWORD" in msg


def test_sudo_password_asked_once_before_threads(tmp_path, keys, monkeypatch):
    _, client_path, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    asked = []
    monkeypatch.delenv(remote_mod.SUDO_PASSWORD_ENV, raising=False)
    monkeypatch.setattr(remote_mod, "_have_terminal", lambda: True)
    monkeypatch.setattr(remote_mod.getpass, "getpass", lambda prompt: asked.append(prompt) or "s3cret")
    inv = local_inventory(tmp_path, 22, kh, client_path, user="ops", sudo=True)
    with Remote(inv) as r:
        assert asked == ["sudo password for ops on web, tc1, tc2: "]
        feeds = r.map(inv.hosts, r._sudo_input)  # the per-host threads only read it
    assert feeds == {"web": "s3cret\n", "tc1": "s3cret\n", "tc2": "s3cret\n"} and len(asked) == 1


def test_sudo_password_from_env_never_prompts(tmp_path, keys, monkeypatch):
    _, client_path, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    monkeypatch.setenv(remote_mod.SUDO_PASSWORD_ENV, "fromenv")
    monkeypatch.setattr(remote_mod.getpass, "getpass", lambda prompt: pytest.fail("prompted"))
    with Remote(local_inventory(tmp_path, 22, kh, client_path, user="ops", sudo=True)) as r:
        assert r._sudo_password == "fromenv"


def test_prompt_answered_with_eof_is_one_line(tmp_path, keys, monkeypatch):
    _, client_path, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    monkeypatch.delenv(remote_mod.SUDO_PASSWORD_ENV, raising=False)
    monkeypatch.setattr(remote_mod, "_have_terminal", lambda: True)

    def eof(prompt):
        raise EOFError

    monkeypatch.setattr(remote_mod.getpass, "getpass", eof)
    with pytest.raises(TcsessionError) as info:
        Remote(local_inventory(tmp_path, 22, kh, client_path, user="ops", sudo=True))
    assert "no sudo password given for ops" in one_line(str(info.value))


def test_agent_without_agent_running(tmp_path, keys, monkeypatch):
    _, _, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(TcsessionError) as info:
        Remote(local_inventory(tmp_path, 22, kh, None, agent=True))
    msg = one_line(str(info.value))
    assert "[nginx.web] agent = true but no ssh-agent is running" in msg and "ssh-add" in msg


def test_key_paramiko_cannot_load(tmp_path, keys):
    """Passes the inventory's structural check (openssh-key-v1, cipher none) but is cut short."""
    import base64
    _, _, _ = keys
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    body = b"openssh-key-v1\0" + (4).to_bytes(4, "big") + b"none" + b"\0\0\0\4none\0\0\0\0\0\0\0\1"
    bad = tmp_path / "cut_key"
    bad.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n" + base64.b64encode(body).decode()
                   + "\n-----END OPENSSH PRIVATE KEY-----\n")
    bad.chmod(0o600)
    with pytest.raises(TcsessionError) as info:
        Remote(local_inventory(tmp_path, 22, kh, bad))
    msg = one_line(str(info.value))
    assert f"key {bad} cannot be loaded" in msg and "ssh-keygen -t ed25519" in msg


def test_encrypted_key_at_connect_time_points_to_the_agent(tmp_path, keys):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    enc = write_key(tmp_path / "enc_key", passphrase=b"pw")
    with pytest.raises(TcsessionError) as info:
        Remote(local_inventory(tmp_path, 22, kh, enc))
    msg = one_line(str(info.value))
    assert f"ssh-add {enc}" in msg and "agent = true" in msg


def test_connections_have_nagle_off_and_connect_all_opens_them_before_the_first_command(tmp_path, keys):
    """Nagle's algorithm off on every connection (each command had waited ~40 ms for a delayed ACK);
    connect_all returns with every host's connection open, and the first command uses it."""
    import socket

    host_key, client_path, client_key = keys
    with ssh_server(host_key, client_key) as srv:
        kh = tmp_path / "known_hosts"
        kh.write_text(known_line(srv.port, host_key))
        inv = local_inventory(tmp_path, srv.port, kh, client_path)
        with Remote(inv) as r:
            r.connect_all()
            opened = {name: f.result(timeout=0) for name, f in list(r._warming.items())}  # none still opening
            assert set(opened) == {h.name for h in inv.hosts} and r.commands == 0
            assert all(c.is_connected for c in opened.values())
            results = r.run_all(inv.hosts, "echo hi")
            assert all(res.ok and res.stdout == "ran: echo hi\n" for res in results.values()), results
            for h in inv.hosts:  # the very connections connect_all opened, not new ones
                assert r._conns[h.name] is opened[h.name]
                sock = opened[h.name].client.get_transport().sock
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def run_answered_by(reply, tmp_path, keys, command: str, **kw):
    """`command` run by a Remote on a test SSH server whose exec requests `reply(channel, command)`
    answers: its Result, and the inventory."""
    host_key, client_path, client_key = keys
    with ssh_server(host_key, client_key, reply) as srv:
        kh = tmp_path / "known_hosts"
        kh.write_text(known_line(srv.port, host_key))
        inv = local_inventory(tmp_path, srv.port, kh, client_path)
        with Remote(inv) as r:
            return r.run(inv.hosts[0], command, **kw), inv


def test_a_command_is_read_whole_when_its_exit_status_comes_before_its_output(tmp_path, keys):
    """The runner returns when the exit status arrives (not at Invoke's next 10 ms look), and still
    reads stdout and stderr to their end: here the status comes first, then 300 KB on each."""
    out, err = b"o" * 300_000, b"e" * 300_000

    def reply(channel, command):
        channel.send_exit_status(3)
        time.sleep(0.1)
        channel.sendall(out)
        channel.sendall_stderr(err)
        channel.close()

    res, _ = run_answered_by(reply, tmp_path, keys, "anything")
    assert (res.exit, len(res.stdout), len(res.stderr)) == (3, len(out), len(err))
    assert res.stdout == out.decode() and res.stderr == err.decode()


def test_a_command_past_its_timeout_is_stopped_with_one_line(tmp_path, keys):
    """The runner's wait still ends when Invoke's timer closes the channel (no exit status ever
    comes): the command is reported timed out, not waited for."""

    def reply(channel, command):
        channel.sendall(b"started\n")
        time.sleep(5)  # no exit status within the timeout
        channel.close()

    res, inv = run_answered_by(reply, tmp_path, keys, "sleep 600", timeout=0.5)
    assert res.exit is None and one_line(res.error) == (
        f"web (127.0.0.1): timed out: the command did not finish within 0.5 s ([ssh] command_timeout in {inv.path})")
    assert res.seconds < 4, res  # stopped at its timeout, not at the command's end (5 s)


def test_a_connection_connect_all_could_not_open_fails_its_first_command_with_one_line(tmp_path, keys):
    _, client_path, _ = keys
    inv, closed = refused_inventory(tmp_path, client_path)
    with Remote(inv) as r:
        r.connect_all()
        results = r.run_all(inv.hosts, "true")
    for h in inv.hosts:
        assert one_line(results[h.name].error) == f"{h.name} (127.0.0.1:{closed}): cannot connect: Connection refused"
