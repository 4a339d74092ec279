"""SSH like OpenSSH, on real hosts: ONE lab whose hosts refuse root (PermitRootLogin no) and have
two sudo users, ops (sudo with the lab's password) and deploy (NOPASSWD); its Tomcats take SSH
logins only from the nginx host's address (sshd AllowUsers *@<nginx>), so every command that
reaches them went through nginx as a jump host.

- ops, the password from TCSESSION_SUDO_PASSWORD, the jump host named in the inventory
  (jump = ...): deploys from fresh hosts (through the `inv` command, whose output never shows
  the password), checks status, deploys a change and rolls it back;
- deploy, sudo_nopasswd = true, no password anywhere, everything from an SSH config file
  ([ssh] config): Host aliases (ssh_host), User, HostName (for the Tomcats a name that only the
  jump host resolves, distinct from their cluster addresses), and ProxyJump to the nginx host's
  alias: deploys a change, checks status, rolls it back.
The hosts' own sshd and sudo logs say who logged in from where, and that sudo ran as whom."""

from __future__ import annotations

import os
import subprocess

import paramiko
import pytest

from conftest import ROOT, running_lab
from tcsession import status
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory
from tcsession.remote import Remote, read_known_hosts
from tcsession.rollback import rollback

pytestmark = pytest.mark.lab

LAB, NET = "tcsssh", "10.153.121."
NGINX, TC1, TC2 = NET + "111", NET + "112", NET + "113"
LAB_TABLE = f"""[lab]
name = "{LAB}"
subnet = "{NET}0/24"
sudo_users = ["ops"]
nopasswd_users = ["deploy"]
root_login = false
jump_host = "nginx"
"""
# ops, sudo with a password, the Tomcats through the jump host named in the inventory
PASSWORD_INV = LAB_TABLE + f"""
[ssh]
user = "ops"

[nginx.nginx]
address = "{NGINX}"
http_port = 80

[tomcat.tomcat1]
address = "{TC1}"
jump = "{NGINX}"

[tomcat.tomcat2]
address = "{TC2}"
jump = "{NGINX}"

[app]
test_page = true
"""
# deploy, NOPASSWD; where and as whom from the SSH config only
NOPASSWD_INV = LAB_TABLE + """
[ssh]
config = "ssh_config"
sudo_nopasswd = true

[nginx.nginx]
address = "{nginx}"
ssh_host = "front"
http_port = 80

[tomcat.tomcat1]
address = "{tc1}"
ssh_host = "tc1"

[tomcat.tomcat2]
address = "{tc2}"
ssh_host = "tc2"

[app]
test_page = true
""".format(nginx=NGINX, tc1=TC1, tc2=TC2)
SSH_CONFIG = f"""\
Host front
    HostName {NGINX}
Host tc1
    HostName tomcat1
Host tc2
    HostName tomcat2
Host tc*
    ProxyJump front
Host *
    User deploy
"""


@pytest.fixture(scope="module")
def sudo_lab(tmp_path_factory):
    d = tmp_path_factory.mktemp(LAB)
    for name, text in (("password.toml", PASSWORD_INV), ("nopasswd.toml", NOPASSWD_INV), ("ssh_config", SSH_CONFIG),
                       ("password-8081.toml", PASSWORD_INV.replace("http_port = 80\n", "http_port = 8081\n")),
                       ("nopasswd-8081.toml", NOPASSWD_INV.replace("http_port = 80\n", "http_port = 8081\n"))):
        (d / name).write_text(text)
    lab = running_lab(d / "password.toml")
    try:
        handle = next(lab)
        handle.dir = d
        handle.password = (handle.spec.state_dir / "sudo-password").read_text().strip()
        yield handle
    finally:
        lab.close()


def connect(lab, user: str, address: str) -> Exception | None:
    """A direct login from this machine with the lab's key and host keys (RejectPolicy)."""
    client = paramiko.SSHClient()
    for k in read_known_hosts(lab.spec.known_hosts):
        for n in k.names:
            client.get_host_keys().add(n, k.key.get_name(), k.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, username=user, key_filename=str(lab.spec.key), look_for_keys=False,
                       allow_agent=False, timeout=5)
        return None
    except paramiko.AuthenticationException as e:
        return e
    finally:
        client.close()


def healthy(inv):
    report = status.cluster_report(inv, session_requests=3)
    assert report.healthy, [(h.name, h.problems) for h in report.hosts]
    return report


def host_logs(inv, name: str) -> str:
    """The host's sshd and sudo journal, read through tcsession (checked)."""
    with Remote(inv) as r:
        res = r.run(inv.host(name), "journalctl --no-pager -o cat _COMM=sshd + _COMM=sudo")
    assert res.ok, res.why()
    return res.stdout


def test_root_cannot_log_in_and_the_tomcats_take_logins_only_through_the_jump_host(sudo_lab):
    assert isinstance(connect(sudo_lab, "root", NGINX), paramiko.AuthenticationException)  # PermitRootLogin no
    assert connect(sudo_lab, "ops", NGINX) is None  # the jump host itself: direct
    for user in ("ops", "deploy"):
        assert isinstance(connect(sudo_lab, user, TC1), paramiko.AuthenticationException)  # AllowUsers *@nginx


def test_wrong_sudo_password_is_one_line_and_runs_nothing(sudo_lab, monkeypatch):
    monkeypatch.setenv("TCSESSION_SUDO_PASSWORD", "not-" + sudo_lab.password)
    inv = load_inventory(sudo_lab.dir / "password.toml")
    with Remote(inv) as r:
        res = r.run(inv.host("tomcat1"), "touch /root/ran")
    assert not res.ok and "\n" not in res.error, res
    assert res.error.startswith(f"tomcat1 ({TC1}): sudo refused the password for ops"), res.error
    assert sudo_lab.password not in res.error
    monkeypatch.setenv("TCSESSION_SUDO_PASSWORD", sudo_lab.password)
    assert sudo_lab.check("tomcat1", "test ! -e /root/ran && id -u") == "0\n"


def test_sudo_with_a_password_deploys_checks_and_rolls_back_through_the_inventorys_jump_host(sudo_lab):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TCSESSION_SUDO")}
    env["TCSESSION_SUDO_PASSWORD"] = sudo_lab.password
    inv_path = sudo_lab.dir / "password.toml"
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "inv"), "deploy", "--mode=delta", "-i", str(inv_path)],
                       cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert sudo_lab.password not in p.stdout + p.stderr
    os.environ["TCSESSION_SUDO_PASSWORD"] = sudo_lab.password  # for the calls below; removed at the end
    try:
        inv = load_inventory(inv_path)
        healthy(inv)
        changed = load_inventory(sudo_lab.dir / "password-8081.toml")
        report = deploy(changed, "delta", quiet=True)
        assert report.changed and report.deploy_id
        assert healthy(changed).hosts[0].name == "nginx"
        assert rollback(inv, quiet=True) == [report.deploy_id]
        healthy(inv)
        for name in ("tomcat1", "tomcat2"):
            logs = host_logs(inv, name)
            assert f"Accepted publickey for ops from {NGINX} " in logs, logs[-2000:]
            assert f"Accepted publickey for ops from {NET}1 " not in logs  # never straight from here
            if name == "tomcat1":  # the first test's try, refused by sshd
                assert f"User ops from {NET}1 not allowed because not listed in AllowUsers" in logs
            assert "ops : PWD=" in logs and "USER=root ; COMMAND=/usr/bin/sh -c" in logs  # sudo, as root
            assert sudo_lab.password not in logs
    finally:
        del os.environ["TCSESSION_SUDO_PASSWORD"]


def test_nopasswd_sudo_deploys_checks_and_rolls_back_through_the_ssh_configs_proxyjump(sudo_lab, monkeypatch):
    monkeypatch.delenv("TCSESSION_SUDO_PASSWORD", raising=False)
    password_file = sudo_lab.spec.state_dir / "sudo-password"
    hidden = password_file.with_name("sudo-password.hidden")  # no password to be found anywhere
    password_file.rename(hidden)
    try:
        inv = load_inventory(sudo_lab.dir / "nopasswd.toml")
        tc1 = inv.host("tomcat1")
        # SSH goes to "tomcat1", a name only the jump host resolves (its /etc/hosts), not the
        # cluster address TC1, which server.xml and nginx keep
        assert (tc1.ssh.user, tc1.ssh_address, tc1.ssh.alias, tc1.ssh.nopasswd) == ("deploy", "tomcat1", "tc1", True)
        assert tc1.address == TC1
        assert [(h.name, h.host, h.user) for h in tc1.ssh.jump] == [("front", NGINX, "deploy")]
        assert inv.nginx.ssh.jump == () and inv.nginx.ssh_address == NGINX
        changed = load_inventory(sudo_lab.dir / "nopasswd-8081.toml")
        report = deploy(changed, "delta", quiet=True)
        assert report.changed and report.deploy_id
        healthy(changed)
        assert rollback(inv, quiet=True) == [report.deploy_id]
        healthy(inv)
        with Remote(inv) as r:  # written as root by deploy's sudo -n: the record of the rollback
            res = r.run(inv.nginx, f"stat -c %U /var/lib/tcsession/deploys/{report.deploy_id}/rolled-back")
        assert res.ok and res.stdout == "root\n", res
        for name in ("tomcat1", "tomcat2"):
            logs = host_logs(inv, name)
            assert f"Accepted publickey for deploy from {NGINX} " in logs, logs[-2000:]
            assert f"Accepted publickey for deploy from {NET}1 " not in logs
            assert "deploy : PWD=" in logs and "USER=root ; COMMAND=/usr/bin/sh -c" in logs
    finally:
        hidden.rename(password_file)
