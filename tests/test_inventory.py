"""tcsession.inventory: hosts.toml -> frozen dataclasses, one-line errors."""

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from tcsession.errors import TcsessionError
from tcsession.inventory import (
    Delta, Host, Inventory, Lab, Msm, Ssh, lab_state_dir, load_inventory, parse_inventory,
)

ROOT = Path(__file__).resolve().parents[1]


def write_private_key(path: Path) -> Path:
    """A real unencrypted OpenSSH ed25519 private key, mode 0600 (what OpenSSH accepts)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    path.chmod(0o600)
    return path

# A minimal real-hosts inventory; the key file "id_test" is created next to the tmp hosts.toml.
SSH = '[ssh]\nkey = "id_test"\n'
NGINX = '[nginx.web]\naddress = "192.0.2.10"\n'
TC1 = '[tomcat.tc1]\naddress = "192.0.2.11"\n'
TC2 = '[tomcat.tc2]\naddress = "192.0.2.12"\n'
GOOD = SSH + NGINX + TC1 + TC2

LAB = '[lab]\nname = "lab1"\n'
LAB_HOSTS = ('[nginx.nginx]\naddress = "10.153.0.111"\n'
             '[tomcat.tomcat1]\naddress = "10.153.0.112"\n'
             '[tomcat.tomcat2]\naddress = "10.153.0.113"\n')
LAB_GOOD = LAB + LAB_HOSTS


@pytest.fixture
def hosts_path(tmp_path):
    write_private_key(tmp_path / "id_test")
    return tmp_path / "hosts.toml"


def parse(text, path):
    return parse_inventory(text, path)


def error(text, path):
    with pytest.raises(TcsessionError) as info:
        parse_inventory(text, path)
    return str(info.value)


# --------------------------------------------------------------------------- good files


def test_shipped_hosts_toml_is_the_lab():
    inv = load_inventory(ROOT / "hosts.toml")
    assert inv.lab == Lab("tcsession", "bookworm", ipaddress.IPv4Network("10.153.0.0/24"))
    assert inv.lab.state_dir == Path("/var/lib/tcsession/lab/tcsession")
    assert [(h.role, h.name, h.address) for h in inv.hosts] == [
        ("nginx", "nginx", "10.153.0.111"),
        ("tomcat", "tomcat1", "10.153.0.112"),
        ("tomcat", "tomcat2", "10.153.0.113"),
    ]
    assert [t.jvm_route for t in inv.tomcats] == ["tomcat1", "tomcat2"]
    assert inv.nginx.jvm_route is None and inv.nginx.memcached is False
    for h in inv.hosts:  # the lab provides key and known_hosts, whether or not the lab is up
        assert h.ssh.key == Path("/var/lib/tcsession/lab/tcsession/id_ed25519")
        assert h.ssh.known_hosts == Path("/var/lib/tcsession/lab/tcsession/known_hosts")
        assert h.ssh.user == "root" and h.ssh.sudo is False and h.ssh.agent is False
    assert inv.delta == Delta("delta", "multicast", "228.0.0.4", 45564, 4000, 6, 60, False,
                              str(ROOT / "hosts.cluster-key"))
    assert (inv.msm.sticky, inv.msm.serializer, inv.msm.scope, inv.msm.version) == (True, "java", "app", "2.3.2")
    assert inv.msm.request_uri_ignore_pattern == r".*\.(ico|png|gif|jpg|css|js)$"


def test_example_real_loads_when_its_key_exists(tmp_path, monkeypatch):
    example = ROOT / "examples" / "hosts.real.toml"
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(TcsessionError, match=r"key .*no such file"):
        load_inventory(example)
    (tmp_path / ".ssh").mkdir()
    write_private_key(tmp_path / ".ssh" / "id_ed25519")
    inv = load_inventory(example)
    assert inv.lab is None
    assert [h.address for h in inv.hosts] == ["192.168.153.111", "192.168.153.112", "192.168.153.113"]
    for h in inv.hosts:
        assert h.ssh.user == "ops" and h.ssh.sudo is True
        assert h.ssh.key == tmp_path / ".ssh" / "id_ed25519"
        assert h.ssh.known_hosts == tmp_path / ".ssh" / "known_hosts"


def test_defaults(hosts_path, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    inv = parse(GOOD, hosts_path)
    assert isinstance(inv, Inventory) and inv.path == hosts_path and inv.lab is None
    assert isinstance(inv.hosts, tuple) and isinstance(inv.tomcats, tuple)
    ssh = Ssh(user="root", port=22, key=tmp_path / "id_test", agent=False,
              known_hosts=Path("/home/someone/.ssh/known_hosts"), sudo=False,
              connect_timeout=10.0, command_timeout=600.0)
    assert inv.hosts == (
        Host("web", "nginx", "192.0.2.10", ssh, 80, None, False),
        Host("tc1", "tomcat", "192.0.2.11", ssh, 8080, "tc1", True),
        Host("tc2", "tomcat", "192.0.2.12", ssh, 8080, "tc2", True),
    )
    assert inv.delta == Delta(manager="delta", membership=None, multicast_address="228.0.0.4",
                              multicast_port=45564, receiver_port=4000, channel_send_options=6,
                              state_transfer_timeout=60, encrypt=False,
                              key_file=str(hosts_path.with_name(hosts_path.stem + ".cluster-key").absolute()))
    assert inv.msm == Msm(sticky=True, serializer="java", locking_mode="all",
                          request_uri_ignore_pattern=r".*\.(ico|png|gif|jpg|css|js)$", scope="app",
                          memcached_port=11211, memcached_localhost=False, maven_repo="https://repo.maven.apache.org/maven2",
                          jakarta="convert", version="2.3.2", backup="sync")


def test_host_overrides_ssh_and_sudo_defaults_to_non_root(hosts_path):
    text = GOOD + 'user = "ops"\nport = 2222\nconnect_timeout = 2.5\n'  # appended to [tomcat.tc2]
    inv = parse(text, hosts_path)
    tc2 = inv.host("tc2")
    assert (tc2.ssh.user, tc2.ssh.port, tc2.ssh.sudo, tc2.ssh.connect_timeout) == ("ops", 2222, True, 2.5)
    assert (inv.host("tc1").ssh.user, inv.host("tc1").ssh.port, inv.host("tc1").ssh.sudo) == ("root", 22, False)


def test_agent_only_and_explicit_values(hosts_path):
    text = ('[ssh]\nagent = true\nknown_hosts = "kh"\n' + NGINX + 'http_port = 8000\n'
            + TC1 + 'jvm_route = "node_A-1"\nmemcached = false\nhttp_port = 8081\n' + TC2
            + '[delta]\nmanager = "backup"\nmembership = "static"\nchannel_send_options = 8\n'
            + '[msm]\nsticky = false\nlocking_mode = "uriPattern:/app/.*"\nmaven_repo = "m2"\n')
    (hosts_path.parent / "m2").mkdir()
    inv = parse(text, hosts_path)
    assert inv.nginx.ssh.key is None and inv.nginx.ssh.agent is True
    assert inv.nginx.ssh.known_hosts == hosts_path.parent / "kh"
    assert inv.nginx.http_port == 8000
    tc1 = inv.host("tc1")
    assert (tc1.jvm_route, tc1.memcached, tc1.http_port) == ("node_A-1", False, 8081)
    assert (inv.delta.manager, inv.delta.membership, inv.delta.channel_send_options) == ("backup", "static", 8)
    assert inv.msm.locking_mode == "uriPattern:/app/.*" and inv.msm.sticky is False
    assert inv.msm.maven_repo == str(hosts_path.parent / "m2")


def test_host_names_and_ipv6_are_refused_by_design(hosts_path):
    """Addresses go into server.xml, nginx and memcachedNodes: IPv4 literals only (README)."""
    msg = error(GOOD.replace('"192.0.2.10"', '"lb.example.com"'), hosts_path)
    assert '[nginx.web] address = "lb.example.com" is a host name' in msg and "getent ahostsv4" in msg
    msg = error(GOOD.replace('"192.0.2.11"', '"2001:db8::11"'), hosts_path)
    assert '[tomcat.tc1] address = "2001:db8::11" is an IPv6 address' in msg and "not support" in msg


def test_lab_mode_does_not_need_a_key_file(tmp_path):
    inv = parse(LAB_GOOD, tmp_path / "hosts.toml")
    assert inv.lab.name == "lab1" and inv.lab.release == "bookworm"
    assert inv.lab.state_dir == lab_state_dir("lab1") == Path("/var/lib/tcsession/lab/lab1")
    assert inv.nginx.ssh.key == Path("/var/lib/tcsession/lab/lab1/id_ed25519")
    assert not inv.nginx.ssh.agent


def test_dataclasses_are_frozen(hosts_path):
    inv = parse(GOOD, hosts_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        inv.hosts[0].address = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        inv.msm.sticky = False


def test_unknown_host_lookup_lists_names(hosts_path):
    inv = parse(GOOD, hosts_path)
    with pytest.raises(TcsessionError, match=r'no host named "tc3"; use one of: web, tc1, tc2'):
        inv.host("tc3")


# --------------------------------------------------------------------------- bad files

# (id, text, fragments the one-line message must contain). Each text is checked with a
# real key file "id_test" next to it, so only the intended problem is wrong.
BAD = [
    ("typo-key", GOOD.replace("address = \"192.0.2.11\"", "adress = \"192.0.2.11\""),
     ['[tomcat.tc1] unknown key "adress"', 'did you mean "address"?', "known: address, jvm_route"]),
    ("unknown-key-no-match", GOOD + "flavour = 1\n", ['[tomcat.tc2] unknown key "flavour"; remove it']),
    ("unknown-table", GOOD + "[sssh]\nport = 2\n", ['"sssh"', "did you mean [ssh]?"]),
    ("unknown-top-key", "paint = 1\n" + GOOD, ['"paint"', "remove it", "known: lab, ssh"]),
    ("no-nginx", SSH + TC1 + TC2, ["no nginx host", "[nginx.NAME]"]),
    ("two-nginx", GOOD + '[nginx.web2]\naddress = "192.0.2.20"\n',
     ["[nginx.web2]", "second nginx", "[nginx.web]", "exactly one"]),
    ("nginx-without-name", SSH + '[nginx]\naddress = "192.0.2.10"\n' + TC1 + TC2,
     ["[nginx] address", "not a host table", "[nginx.NAME]"]),
    ("one-tomcat", SSH + NGINX + TC1, ["at least two [tomcat.NAME]", "[tomcat.tc1]", "add another"]),
    ("host-not-table", SSH + NGINX + TC1 + '[tomcat]\ntc2 = "192.0.2.12"\n',
     ["[tomcat] tc2", "not a host table"]),
    ("tomcat-array", SSH + NGINX + '[[tomcat]]\naddress = "192.0.2.11"\n',
     ["tomcat must be tables like [tomcat.NAME]"]),
    ("dup-address", GOOD.replace('"192.0.2.12"', '"192.0.2.11"'),
     ['[tomcat.tc2] address "192.0.2.11" is already used by [tomcat.tc1]', "own address"]),
    ("dup-address-ipv4-spelling", SSH + '[nginx.web]\naddress = "192.0.2.11"\n' + TC1 + TC2,
     ['[tomcat.tc1] address "192.0.2.11" is already used by [nginx.web]']),
    ("dup-name", GOOD + '[tomcat.web]\naddress = "192.0.2.13"\n',
     ["[tomcat.web] has the same name as [nginx.web]", "rename"]),
    ("dup-jvm-route", GOOD.replace(TC2, TC2 + 'jvm_route = "tc1"\n'),
     ['[tomcat.tc2] jvm_route "tc1" is already used by [tomcat.tc1]', "its own jvm_route"]),
    ("jvm-route-dot", GOOD.replace(TC1, TC1 + 'jvm_route = "tc.1"\n'),
     ['[tomcat.tc1] jvm_route = "tc.1" is invalid', "no dots"]),
    ("bad-host-name", GOOD.replace("[tomcat.tc1]", "[tomcat.Tc_1]"),
     ['[tomcat.Tc_1] invalid host name "Tc_1"', "lowercase"]),
    ("bad-address", GOOD.replace('"192.0.2.11"', '"192.0.2.999"'),
     ['[tomcat.tc1] address = "192.0.2.999"', "is not an IPv4 address", '"192.0.2.10"']),
    ("port-0", SSH + "port = 0\n" + NGINX + TC1 + TC2, ["[ssh] port = 0", "1 to 65535"]),
    ("port-70000", GOOD.replace(NGINX, NGINX + "http_port = 70000\n"),
     ["[nginx.web] http_port = 70000", "1 to 65535"]),
    ("port-string", SSH + 'port = "22"\n' + NGINX + TC1 + TC2,
     ['[ssh] port = "22" is a string, expected an integer', "port = 22"]),
    ("port-bool", GOOD + "port = true\n", ["[tomcat.tc2] port = true is a boolean, expected an integer"]),
    ("sudo-string", SSH + 'sudo = "yes"\n' + NGINX + TC1 + TC2,
     ['[ssh] sudo = "yes" is a string, expected true or false', "sudo = true"]),
    ("timeout-zero", SSH + "command_timeout = 0\n" + NGINX + TC1 + TC2,
     ["[ssh] command_timeout = 0", "greater than 0"]),
    ("missing-key-file", GOOD.replace('"id_test"', '"id_missing"'),
     ['[ssh] key = "id_missing": no such file', "ssh-keygen", "agent = true"]),
    ("host-missing-key-file", GOOD + 'key = "nope"\n', ['[tomcat.tc2] key = "nope": no such file']),
    ("no-key-no-agent", NGINX + TC1 + TC2, ["[ssh] has no SSH key", 'key = "~/.ssh/id_ed25519"', "agent = true"]),
    ("secret-sudo-password", SSH + 'sudo_password = "hunter2"\n' + NGINX + TC1 + TC2,
     ["[ssh] sudo_password: no secrets in hosts.toml", "TCSESSION_SUDO_PASSWORD"]),
    ("secret-host-password", GOOD + 'password = "x"\n',
     ["[tomcat.tc2] password: no secrets in hosts.toml", "TCSESSION_SUDO_PASSWORD"]),
    ("secret-passphrase", SSH + 'passphrase = "x"\n' + NGINX + TC1 + TC2,
     ["[ssh] passphrase: no secrets", "ssh-agent"]),
    ("user-no-sudo", SSH + 'user = "ops"\nsudo = false\n' + NGINX + TC1 + TC2,
     ['[ssh] user = "ops" with sudo = false', "needs root", 'sudo = true or user = "root"']),
    ("host-user-no-sudo", SSH + "sudo = false\n" + NGINX + TC1 + TC2 + 'user = "ops"\n',
     ['[tomcat.tc2] user = "ops" with sudo = false', "sudo = true"]),
    ("bad-manager", GOOD + '[delta]\nmanager = "deltas"\n',
     ['[delta] manager = "deltas" is not one of "delta", "backup"']),
    ("bad-membership", GOOD + '[delta]\nmembership = "dns"\n',
     ['[delta] membership = "dns" is not one of "multicast", "static"']),
    ("not-multicast", GOOD + '[delta]\nmulticast_address = "10.0.0.4"\n',
     ['[delta] multicast_address = "10.0.0.4" is not an IPv4 multicast address', "228.0.0.4"]),
    ("bad-serializer", GOOD + '[msm]\nserializer = "json"\n', ['[msm] serializer = "json"', '"kryo"']),
    ("bad-locking-mode", GOOD + '[msm]\nlocking_mode = "uriPattern:"\n',
     ['[msm] locking_mode = "uriPattern:" is invalid', "uriPattern:<regex>"]),
    ("bad-backup", GOOD + '[msm]\nbackup = "later"\n',
     ['[msm] backup = "later" is not "sync" or "async"', 'use "sync"']),
    ("bad-maven-repo", GOOD + '[msm]\nmaven_repo = "ftp://x/m2"\n', ['[msm] maven_repo = "ftp://x/m2"', "https://"]),
    ("port-clash", GOOD.replace(TC1, TC1 + "http_port = 4000\n"),
     ["[tomcat.tc1] http_port 4000 is the same as [delta] receiver_port", "different ports"]),
    ("toml-syntax", SSH + NGINX + "address = \n" + TC1 + TC2,
     ["invalid TOML at line 5, column 11", "Invalid value", "fix the syntax"]),
    ("toml-duplicate-key", GOOD + 'address = "192.0.2.13"\n', ["invalid TOML", "fix the syntax"]),
    ("ssh-not-table", "ssh = 1\n" + NGINX + TC1 + TC2, ["[ssh] must be a table, not an integer"]),
    # lab mode
    ("lab-outside-subnet", LAB_GOOD.replace('"10.153.0.113"', '"10.153.1.113"'),
     ['[tomcat.tomcat2] address "10.153.1.113" is outside the lab subnet 10.153.0.0/24',
      "10.153.0.2 to 10.153.0.254"]),
    ("lab-dot-1", LAB_GOOD.replace('"10.153.0.111"', '"10.153.0.1"'),
     ['[nginx.nginx] address "10.153.0.1" is the control machine', "10.153.0.2 to"]),
    ("lab-broadcast", LAB_GOOD.replace('"10.153.0.111"', '"10.153.0.255"'),
     ['[nginx.nginx] address "10.153.0.255" is the broadcast address']),
    ("lab-hostname", LAB_GOOD.replace('"10.153.0.111"', '"lb.example.com"'),
     ['[nginx.nginx] address = "lb.example.com" is a host name']),
    ("lab-key", LAB + '[ssh]\nkey = "~/.ssh/id_ed25519"\n' + LAB_HOSTS,
     ["[ssh] key: the lab provides", "remove key"]),
    ("lab-host-agent", LAB_GOOD + "agent = true\n", ["[tomcat.tomcat2] agent: the lab provides", "remove agent"]),
    ("lab-known-hosts", LAB + '[ssh]\nknown_hosts = "kh"\n' + LAB_HOSTS, ["[ssh] known_hosts: the lab provides"]),
    ("lab-subnet-not-24", '[lab]\nsubnet = "10.153.0.0/16"\n' + LAB_HOSTS,
     ['[lab] subnet = "10.153.0.0/16" is not a /24']),
    ("lab-subnet-host-bits", '[lab]\nsubnet = "10.153.0.5/24"\n' + LAB_HOSTS,
     ['[lab] subnet = "10.153.0.5/24" has host bits set', '"10.153.0.0/24"']),
    ("lab-subnet-garbage", '[lab]\nsubnet = "10.153.0.0"\n' + LAB_HOSTS,
     ['[lab] subnet = "10.153.0.0" is not a /24']),
    ("lab-bad-name", '[lab]\nname = "My Lab"\n' + LAB_HOSTS, ['[lab] name = "My Lab" is invalid']),
    ("lab-bad-release", '[lab]\nrelease = "buster"\n' + LAB_HOSTS,
     ['[lab] release = "buster" is not one of "bookworm", "bullseye"']),
]


@pytest.mark.parametrize("text,fragments", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_inventory_gives_one_line(text, fragments, hosts_path):
    msg = error(text, hosts_path)
    assert "\n" not in msg
    assert msg.startswith(f"{hosts_path}: ")
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_bad_cases_differ_from_good_only_in_the_fault(hosts_path):
    """Guard the table above: the building blocks themselves are valid."""
    parse(GOOD, hosts_path)
    parse(LAB_GOOD, hosts_path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "hosts.toml"
    with pytest.raises(TcsessionError) as info:
        load_inventory(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: no such file") and "\n" not in msg
    assert "examples/hosts.real.toml" in msg and "create it" in msg


def test_directory_and_non_utf8(tmp_path):
    with pytest.raises(TcsessionError, match="is a directory"):
        load_inventory(tmp_path)
    bad = tmp_path / "hosts.toml"
    bad.write_bytes(b'[ssh]\nuser = "\xff"\n')
    with pytest.raises(TcsessionError, match="not UTF-8"):
        load_inventory(bad)


def test_load_uses_the_path_as_given(hosts_path, monkeypatch):
    monkeypatch.chdir(hosts_path.parent)
    hosts_path.write_text(GOOD.replace('"id_test"', '"gone"'))
    with pytest.raises(TcsessionError) as info:
        load_inventory("hosts.toml")
    assert str(info.value).startswith('hosts.toml: [ssh] key = "gone"')
    hosts_path.write_text(GOOD)
    assert load_inventory("hosts.toml").nginx.ssh.key == hosts_path.parent / "id_test"


# --------------------------------------------------------------------------- every error at once


def test_every_error_of_the_file_at_once_one_line_each(hosts_path):
    """Mistakes in several tables, hosts and keys: all listed in one run, in file order, one line
    each naming the table and key, none a consequence of another (a refused key is not reported
    again as missing)."""
    from tcsession.errors import InventoryError

    text = ('bogus = 1\n'
            '[ssh]\nkey = 5\nuser = "ops"\n'
            '[nginx.web]\naddress = "web.example"\n'
            '[tomcat.tc1]\nadress = "192.0.2.11"\n'
            '[tomcat.tc2]\naddress = "192.0.2.12"\nhttp_port = 99999\n'
            '[tomcat.tc3]\naddress = "192.0.2.12"\n'
            '[delta]\nmanager = "mesh"\nreceiver_port = "4000"\n'
            '[msm]\nserializer = "xml"\n'
            '[rolling]\nmax_unavailable = 0\n')
    with pytest.raises(InventoryError) as info:
        parse(text, hosts_path)
    errors = info.value.errors
    assert str(info.value) == "\n".join(errors)
    expected = ['unknown table or key "bogus"',
                "[ssh] key = 5 is an integer, expected a string",
                '[nginx.web] address = "web.example" is a host name',
                '[tomcat.tc1] unknown key "adress"; did you mean "address"?',
                "[tomcat.tc2] http_port = 99999 is not a port number",
                '[tomcat.tc3] address "192.0.2.12" is already used by [tomcat.tc2]',
                '[delta] manager = "mesh" is not one of "delta", "backup"',
                '[delta] receiver_port = "4000" is a string, expected an integer',
                '[msm] serializer = "xml" is not one of',
                "[rolling] max_unavailable = 0 must be at least 1"]
    assert len(errors) == len(expected), "\n".join(errors)
    for line, fragment in zip(errors, expected):
        assert line.startswith(f"{hosts_path}: ") and "\n" not in line
        assert fragment in line, (fragment, line)
        assert ";" in line  # what is wrong; then the fix


def test_a_clash_on_every_tomcat_is_one_line_per_host(hosts_path):
    from tcsession.errors import InventoryError

    with pytest.raises(InventoryError) as info:
        parse(GOOD + "[delta]\nreceiver_port = 8080\n", hosts_path)
    assert [e.split(": ", 1)[1] for e in info.value.errors] == [
        f"[tomcat.{h}] http_port 8080 is the same as [delta] receiver_port on host {h}; give them different ports"
        for h in ("tc1", "tc2")]
