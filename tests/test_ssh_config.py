"""SSH like OpenSSH, the pure parts and local stand-ins (no lab): an OpenSSH client config
resolved into each host's connection (Host aliases, HostName, User, Port, IdentityFile,
ProxyJump, Include), what the inventory says winning over it; the new keys checked with one-line
errors; jump hosts whose host keys are checked like any host's (a local SSH server that
forwards, on 127.0.0.1 only); sudo with a password or NOPASSWD. The operator's own ~/.ssh is
never read: HOME points at a temporary directory."""

from __future__ import annotations

import dataclasses
import select
import socket
import threading
from pathlib import Path

import paramiko
import pytest

from sshfake import Listener, _Server, known_line, pkey, ssh_server, write_key
from tcsession import shell
from tcsession.errors import TcsessionError
from tcsession.inventory import Hop, load_inventory, parse_inventory
from tcsession.remote import Remote, fingerprint, sudo_hosts

BASE = ('[nginx.web]\naddress = "192.0.2.10"\n'
        '[tomcat.tc1]\naddress = "192.0.2.11"\n[tomcat.tc2]\naddress = "192.0.2.12"\n')


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A HOME of the test's own: ~/.ssh/config is never the machine's."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("TCSESSION_SSH_CONFIG", raising=False)  # conftest's "none": here HOME is the test's
    return h


def inventory(tmp_path: Path, text: str, config: str | None = None, name: str = "hosts.toml"):
    write_key(tmp_path / "id_test")
    if config is not None:
        (tmp_path / "ssh_config").write_text(config)
    path = tmp_path / name
    path.write_text(text)
    return load_inventory(path)


def error(tmp_path: Path, text: str, config: str | None = None) -> str:
    with pytest.raises(TcsessionError) as e:
        inventory(tmp_path, text, config)
    # every problem of the file at once (InventoryError), each one line naming the file: the
    # first is the one the test asks about (a config line that fits many hosts is said per host)
    lines = getattr(e.value, "errors", None) or (str(e.value),)
    assert all("\n" not in l and str(tmp_path) in l for l in lines), lines
    return lines[0]


CONFIG = """\
Host front
    HostName bastion.example.net
    User jumper
    Port 2200
    IdentityFile ~/.ssh/id_jump

Host tc1
    HostName 10.0.0.11
    Port 2222
    IdentityFile ~/.ssh/id_missing
    IdentityFile ~/.ssh/id_tc

Host tc*
    ProxyJump front

Host *
    User ops
"""


def test_config_resolves_aliases_user_port_identityfile_and_proxyjump(tmp_path, home):
    write_key(home / ".ssh" / "id_jump")
    write_key(home / ".ssh" / "id_tc")
    inv = inventory(tmp_path, '[ssh]\nconfig = "ssh_config"\nkey = "id_test"\n' + BASE.replace(
        '[tomcat.tc1]\naddress = "192.0.2.11"\n', '[tomcat.tc1]\naddress = "192.0.2.11"\nssh_host = "tc1"\n'), CONFIG)
    tc1, tc2, web = inv.host("tc1"), inv.host("tc2"), inv.host("web")
    # tc1: HostName and Port from its Host block, User from "Host *", ProxyJump from "Host tc*";
    # key = "id_test" in [ssh] wins over IdentityFile, as ssh's -i does
    assert (tc1.ssh_address, tc1.ssh.port, tc1.ssh.user) == ("10.0.0.11", 2222, "ops")
    assert tc1.address == "192.0.2.11"  # the cluster address is untouched
    assert tc1.ssh.key == tmp_path / "id_test"
    assert tc1.ssh.jump == (Hop("front", "bastion.example.net", 2200, "jumper", home / ".ssh" / "id_jump"),)
    # tc2 and web have no ssh_host: looked up by address, only "Host *" matches
    assert (tc2.ssh_address, tc2.ssh.port, tc2.ssh.user, tc2.ssh.jump) == ("192.0.2.12", 22, "ops", ())
    assert web.ssh.user == "ops" and web.ssh.sudo  # not root: sudo by default
    assert not web.ssh.host and not web.ssh.alias


def test_inventory_wins_over_config_and_identityfile_is_used_when_no_key(tmp_path, home):
    write_key(home / ".ssh" / "id_tc")
    write_key(home / ".ssh" / "id_jump")
    inv = inventory(tmp_path, '[ssh]\nconfig = "ssh_config"\n' + BASE.replace(
        '[tomcat.tc1]\naddress = "192.0.2.11"\n',
        '[tomcat.tc1]\naddress = "192.0.2.11"\nssh_host = "tc1"\nuser = "admin"\nport = 22\njump = "none"\n')
        .replace('[nginx.web]\naddress = "192.0.2.10"\n', '[nginx.web]\naddress = "192.0.2.10"\nkey = "id_test"\n')
        .replace('[tomcat.tc2]\naddress = "192.0.2.12"\n', '[tomcat.tc2]\naddress = "192.0.2.12"\nkey = "id_test"\n'),
        CONFIG)
    tc1 = inv.host("tc1")
    assert (tc1.ssh.user, tc1.ssh.port, tc1.ssh.jump) == ("admin", 22, ())
    # the first IdentityFile that exists (id_missing does not), as ssh tries them in order
    assert tc1.ssh.key == home / ".ssh" / "id_tc"


def test_default_config_is_home_ssh_config_and_none_turns_it_off(tmp_path, home):
    (home / ".ssh" / "config").write_text("Host 192.0.2.11\n    User fromhome\n")
    text = '[ssh]\nkey = "id_test"\n' + BASE
    assert inventory(tmp_path, text).host("tc1").ssh.user == "fromhome"
    off = inventory(tmp_path, text.replace('[ssh]\n', '[ssh]\nconfig = "none"\n'))
    assert off.host("tc1").ssh.user == "root"
    (home / ".ssh" / "config").unlink()  # no ~/.ssh/config: nothing read, no error
    assert inventory(tmp_path, text).host("tc1").ssh.user == "root"


def test_env_names_the_config(tmp_path, monkeypatch):
    (tmp_path / "other_config").write_text("Host 192.0.2.11\n    Port 2022\n")
    text = '[ssh]\nkey = "id_test"\n' + BASE
    monkeypatch.setenv("TCSESSION_SSH_CONFIG", str(tmp_path / "other_config"))
    assert inventory(tmp_path, text).host("tc1").ssh.port == 2022
    monkeypatch.setenv("TCSESSION_SSH_CONFIG", "none")
    assert inventory(tmp_path, text).host("tc1").ssh.port == 22
    monkeypatch.setenv("TCSESSION_SSH_CONFIG", str(tmp_path / "missing"))
    assert "TCSESSION_SSH_CONFIG=" in error(tmp_path, text) and "no such file" in error(tmp_path, text)


def test_lab_inventory_reads_no_config_unless_given(tmp_path, home):
    (home / ".ssh" / "config").write_text("Host *\n    User someone\n    ProxyJump elsewhere\n")
    text = '[lab]\nname = "tcsx"\nsubnet = "10.153.99.0/24"\n' + BASE.replace("192.0.2.", "10.153.99.")
    inv = parse_inventory(text, tmp_path / "lab.toml")
    assert all(h.ssh.user == "root" and h.ssh.jump == () for h in inv.hosts)


def test_include_and_jump_hosts_own_proxyjump(tmp_path, home):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "inner.conf").write_text("Host inner\n    HostName 10.1.0.5\n    ProxyJump outer\n")
    config = "Include conf.d/*.conf\nHost outer\n    HostName 203.0.113.7\n    User gate\n"
    inv = inventory(tmp_path, '[ssh]\nconfig = "ssh_config"\nkey = "id_test"\njump = "inner"\n' + BASE, config)
    hops = inv.host("tc1").ssh.jump
    assert [(h.name, h.host, h.user, h.port) for h in hops] == [("outer", "203.0.113.7", "gate", 22),
                                                                 ("inner", "10.1.0.5", "root", 22)]
    assert all(h.key == tmp_path / "id_test" for h in hops)  # no IdentityFile: the host's key


@pytest.mark.parametrize("extra, config, fragment", [
    ('config = "nope"\n', None, '[ssh] config = "nope": no such file'),
    ('config = "ssh_config"\n', "Host 192.0.2.1*\n    ProxyCommand nc %h %p\n", "ProxyCommand for 192.0.2.10"),
    ('config = "ssh_config"\n', "Host a\n    ProxyJump b\nHost b\n    ProxyJump a\nHost 192.0.2.11\n    ProxyJump a\n",
     "leads back to itself (a -> b -> a)"),
    ('config = "ssh_config"\n', "Host *\n    Port http\n", "Port http (for 192.0.2.10) is not a port number"),
    ('config = "ssh_config"\n', "Match badword\n", "not a valid SSH config"),
    ('jump = "ops@bastion:99999"\n', None, "[ssh] jump = \"ops@bastion:99999\" has the port 99999"),
    ('jump = "a,,b"\n', None, "has an empty hop"),
    ('jump = "ops@@b"\n', None, 'has the hop "ops@@b", which is not [user@]host[:port]'),
])
def test_bad_config_or_jump_is_one_line(tmp_path, extra, config, fragment):
    msg = error(tmp_path, '[ssh]\nkey = "id_test"\n' + extra + BASE, config)
    assert fragment in msg, msg


@pytest.mark.parametrize("value, fragment", [
    ('"ops@tc1"', "has a user in it; write the user as user = "),
    ('"tc1:2222"', "has a port in it; write the port as port = "),
    ('"tc 1"', "is not a host name, an IPv4 address or a Host alias"),
])
def test_bad_ssh_host_is_one_line(tmp_path, value, fragment):
    msg = error(tmp_path, '[ssh]\nkey = "id_test"\n' + BASE.replace(
        '[tomcat.tc2]\naddress = "192.0.2.12"\n', f'[tomcat.tc2]\naddress = "192.0.2.12"\nssh_host = {value}\n'))
    assert f"[tomcat.tc2] ssh_host = {value} {fragment}" in msg, msg


def test_config_key_only_in_ssh_table(tmp_path):
    msg = error(tmp_path, '[ssh]\nkey = "id_test"\n' + BASE.replace(
        '[tomcat.tc2]\naddress = "192.0.2.12"\n', '[tomcat.tc2]\naddress = "192.0.2.12"\nconfig = "x"\n'))
    assert '[tomcat.tc2] unknown key "config"' in msg, msg


LAB = '[lab]\nname = "tcsx"\nsubnet = "10.153.99.0/24"\n'
LAB_HOSTS = BASE.replace("192.0.2.", "10.153.99.").replace(".10\"", ".111\"").replace(".11\"", ".112\"").replace(
    ".12\"", ".113\"")


@pytest.mark.parametrize("lab, ssh, fragment", [
    ("root_login = false\n", "", "[nginx.web] logs in as root, but the lab's hosts refuse root (root_login = false)"),
    ('sudo_users = ["ops"]\n', 'user = "dev"\n', '[nginx.web] user = "dev" is not a user the lab makes'),
    ('sudo_users = ["ops"]\n', 'user = "ops"\nsudo_nopasswd = true\n',
     "sudo_nopasswd = true, but the lab's ops needs a password for sudo"),
    ('sudo_users = ["ops"]\nnopasswd_users = ["ops"]\n', "", "ops is in both sudo_users and nopasswd_users"),
    ('sudo_users = ["Root"]\n', "", 'sudo_users = an array has "Root", not a login name the lab can make'),
    ('sudo_users = "ops"\n', "", 'sudo_users = "ops" is a string, expected an array of strings'),
    ('jump_host = "bastion"\n', "", '[lab] jump_host = "bastion" is not a host of this inventory'),
    ("", 'jump = "192.0.2.1"\n', "[nginx.web] jump host 192.0.2.1 is not an address of the lab subnet 10.153.99.0/24"),

])
def test_lab_ssh_settings_are_checked(tmp_path, lab, ssh, fragment):
    with pytest.raises(TcsessionError) as e:
        parse_inventory(LAB + lab + "[ssh]\n" + ssh + LAB_HOSTS, tmp_path / "lab.toml")
    assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_lab_host_names_only_behind_the_labs_jump_host(tmp_path):
    named = LAB_HOSTS.replace('[tomcat.tc1]\naddress = "10.153.99.112"\n',
                              '[tomcat.tc1]\naddress = "10.153.99.112"\nssh_host = "tc1"\n')
    behind = named.replace('ssh_host = "tc1"\n', 'ssh_host = "tc1"\njump = "10.153.99.111"\n')
    inv = parse_inventory(LAB + 'jump_host = "web"\n' + behind, tmp_path / "lab.toml")
    assert inv.host("tc1").ssh_address == "tc1" and inv.host("tc1").address == "10.153.99.112"
    for lab, text in (('jump_host = "web"\n', named), ("", behind)):  # no jump; no jump host in the lab
        with pytest.raises(TcsessionError) as e:
            parse_inventory(LAB + lab + text, tmp_path / "lab.toml")
        assert "[tomcat.tc1] SSH host tc1 is not an address of the lab subnet 10.153.99.0/24" in str(e.value)


def test_lab_sudo_users_parse(tmp_path):
    inv = parse_inventory(LAB + 'sudo_users = ["ops"]\nnopasswd_users = ["deploy"]\nroot_login = false\n'
                          'jump_host = "web"\n[ssh]\nuser = "deploy"\nsudo_nopasswd = true\n' + LAB_HOSTS,
                          tmp_path / "lab.toml")
    assert inv.lab.sudo_users == ("ops",) and inv.lab.nopasswd_users == ("deploy",)
    assert not inv.lab.root_login and inv.lab.jump_host == "web"
    assert all(h.ssh.nopasswd and h.ssh.sudo for h in inv.hosts)
    assert sudo_hosts(inv) == []  # no password to ask for


# ----------------------------------------------------------------- sudo


def test_sudo_wraps_password_and_nopasswd():
    assert shell.sudo("id") == "sudo -k -S -p '' sh -c id"
    assert shell.sudo("id", nopasswd=True) == "sudo -n sh -c id"


def test_nopasswd_asks_no_password_and_sends_none(tmp_path, monkeypatch):
    monkeypatch.delenv("TCSESSION_SUDO_PASSWORD", raising=False)
    monkeypatch.setattr("tcsession.remote._have_terminal", lambda: False)
    inv = inventory(tmp_path, '[ssh]\nkey = "id_test"\nknown_hosts = "kh"\nuser = "ops"\nsudo_nopasswd = true\n' + BASE)
    r = Remote(inv)  # would raise "needs a password and there is no terminal" for a password sudo
    try:
        h = inv.host("tc1")
        assert r._wrap(h, "id") == "sudo -n sh -c id" and r._sudo_input(h) is None
    finally:
        r.close()


@pytest.mark.parametrize("stderr, exited, fragment", [
    ("sudo: 1 incorrect password attempt\n", 1, "sudo refused the password for ops; give the right one"),
    ("sudo: a password is required\n", 1, "sudo wants a password for ops, but the inventory says sudo_nopasswd"),
    ("ops is not in the sudoers file.\n", 1, None),
    ("sudo: ops is not in the sudoers file.  This incident will be reported.\n", 1, "ops may not use sudo there"),
    ("sh: 1: sudo: not found\n", 127, "sudo is not installed there"),
    ("grep: sudo: a password is required\n", 1, None),  # the command's own words, not sudo's
])
def test_sudo_refusals_are_named(tmp_path, monkeypatch, stderr, exited, fragment):
    monkeypatch.setenv("TCSESSION_SUDO_PASSWORD", "x")
    inv = inventory(tmp_path, '[ssh]\nkey = "id_test"\nknown_hosts = "kh"\nuser = "ops"\n' + BASE)
    with Remote(inv) as r:
        msg = r._sudo_refused(inv.host("tc1"), exited, stderr)
    assert (msg is None) if fragment is None else (fragment in msg and msg.startswith("tc1 (192.0.2.11)")), msg


# ----------------------------------------------------------------- jump hosts, local stand-ins


class _JumpServer(_Server):
    """A jump host: forwards direct-tcpip channels to 127.0.0.1 only, and records them."""

    def __init__(self, client_key, forwarded: list):
        super().__init__(client_key)
        self.forwarded = forwarded

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind in ("session", "direct-tcpip") else \
            paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        if destination[0] != "127.0.0.1":
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        self.forwarded.append(destination)
        return paramiko.OPEN_SUCCEEDED


def jump_server(host_key, client_key, forwarded: list) -> Listener:
    def pump(chan, sock):
        try:
            while True:
                r, _, _ = select.select([chan, sock], [], [], 5)
                if not r:
                    return
                for src, dst in ((chan, sock), (sock, chan)):
                    if src in r:
                        data = src.recv(65536)
                        if not data:
                            return
                        dst.sendall(data)
        except Exception:  # noqa: BLE001 (a stand-in: either end closing ends the pump)
            return
        finally:
            for end in (chan, sock):
                try:
                    end.close()
                except Exception:  # noqa: BLE001 (the transport already gone)
                    pass

    def serve(conn):
        t = paramiko.Transport(conn)
        t.add_server_key(host_key)
        t.start_server(server=_JumpServer(client_key, forwarded))

        def accept():
            while t.is_active():
                chan = t.accept(1)
                if chan is None:
                    continue
                dest = forwarded[-1]
                sock = socket.create_connection(dest, timeout=5)
                threading.Thread(target=pump, args=(chan, sock), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return t

    return Listener(serve)


def jump_inventory(tmp_path, jump_port, target_port, known_hosts, client_path):
    inv = inventory(tmp_path, f'[ssh]\nkey = "id_test"\nknown_hosts = "{known_hosts}"\n' + BASE)
    hop = Hop("bastion", "127.0.0.1", jump_port, "root", client_path)
    hosts = tuple(dataclasses.replace(h, address="127.0.0.1", ssh=dataclasses.replace(
        h.ssh, port=target_port, key=client_path, jump=(hop,), connect_timeout=3.0)) for h in inv.hosts)
    return dataclasses.replace(inv, hosts=hosts)


@pytest.fixture
def pair(tmp_path):
    """A jump host and a host behind it, each with its own host key, one client key."""
    client_path = write_key(tmp_path / "client_key")
    return (pkey(write_key(tmp_path / "jump_key")), pkey(write_key(tmp_path / "target_key")),
            client_path, pkey(client_path))


def test_through_a_jump_host_with_both_keys_known(tmp_path, pair):
    jump_key, target_key, client_path, client_key = pair
    forwarded: list = []
    with jump_server(jump_key, client_key, forwarded) as jump, ssh_server(target_key, client_key) as target:
        kh = tmp_path / "kh"
        kh.write_text(known_line(jump.port, jump_key) + known_line(target.port, target_key))
        inv = jump_inventory(tmp_path, jump.port, target.port, kh, client_path)
        with Remote(inv) as r:
            results = r.run_all(inv.hosts, "echo hi")
        assert all(x.ok and x.stdout == "ran: echo hi\n" for x in results.values()), results
        assert jump.accepted == 1  # one connection to the jump host, shared by the three hosts
        assert forwarded == [("127.0.0.1", target.port)] * 3 and target.accepted == 3


def test_jump_host_key_unknown_is_refused_before_any_host(tmp_path, pair):
    jump_key, target_key, client_path, client_key = pair
    forwarded: list = []
    with jump_server(jump_key, client_key, forwarded) as jump, ssh_server(target_key, client_key) as target:
        kh = tmp_path / "kh"
        kh.write_text(known_line(target.port, target_key))  # the host's key only
        inv = jump_inventory(tmp_path, jump.port, target.port, kh, client_path)
        with Remote(inv) as r:
            res = r.run(inv.hosts[0], "echo hi")
        assert not res.ok and forwarded == [] and target.accepted == 0
        msg = res.error
        assert "\n" not in msg and msg.startswith(f"jump host bastion (127.0.0.1:{jump.port}) of web: host key not in")
        assert fingerprint(jump_key) in msg and f"ssh-keyscan -p {jump.port} -t ed25519 127.0.0.1 >> {kh}" in msg


def test_host_key_behind_jump_changed_is_refused_with_keyscan_through_the_jump(tmp_path, pair):
    jump_key, target_key, client_path, client_key = pair
    other = pkey(write_key(tmp_path / "other"))
    forwarded: list = []
    with jump_server(jump_key, client_key, forwarded) as jump, ssh_server(target_key, client_key) as target:
        kh = tmp_path / "kh"
        kh.write_text(known_line(jump.port, jump_key) + known_line(target.port, other))
        inv = jump_inventory(tmp_path, jump.port, target.port, kh, client_path)
        with Remote(inv) as r:
            res = r.run(inv.hosts[1], "echo hi")
        msg = res.error
        assert not res.ok and "\n" not in msg, msg
        assert msg.startswith(f"tc1 (127.0.0.1:{target.port}): host key CHANGED: {kh} line 2"), msg
        assert (f"ssh -p {jump.port} root@127.0.0.1 ssh-keyscan -p {target.port} -t ed25519 127.0.0.1 >> {kh}"
                in msg), msg


# ----------------------------------------------------------------- the lab's hosts, as rendered


def test_lab_renders_root_login_jump_only_logins_and_sudoers(tmp_path):
    from tcsession import lab

    inv = parse_inventory(LAB + 'sudo_users = ["ops"]\nnopasswd_users = ["deploy"]\nroot_login = false\n'
                          'jump_host = "web"\n[ssh]\nuser = "ops"\n' + LAB_HOSTS, tmp_path / "lab.toml")
    spec = lab.spec_from_inventory(inv)
    web, tc1 = spec.hosts[0], spec.hosts[1]
    front, behind = lab.render_sshd_dropin(spec, web), lab.render_sshd_dropin(spec, tc1)
    assert "PermitRootLogin no\n" in front and "AllowUsers" not in front  # the jump host: from anywhere
    assert "PermitRootLogin no\n" in behind and behind.endswith("AllowUsers *@10.153.99.111\n")
    assert lab.render_sudoers(spec).splitlines()[1:] == ["ops ALL=(ALL:ALL) ALL", "deploy ALL=(ALL:ALL) NOPASSWD: ALL"]
    plain = lab.spec_from_inventory(parse_inventory(LAB + LAB_HOSTS, tmp_path / "plain.toml"))
    assert lab.render_sshd_dropin(plain, plain.hosts[1]) == lab.SSHD_DROPIN  # labs without them: as before
    assert plain.setup == lab._PLAIN_SETUP and spec.setup != plain.setup  # a change remakes the hosts
