"""Bad inputs a demanding user tries (issue 9), each refused before anything connects: exit 2
(a usage or inventory error, docs/cli.md) from `inv`, one line naming the file, the table and key, and the fix; never a traceback.

Beyond tests/test_inventory.py's cases. Inventory files are named site-a.toml (not hosts.toml)
so that a message naming "hosts.toml" whatever -i said would fail. Host-facing bad inputs
(known_hosts, host keys, banners, sudo) are in tests/test_remote_errors.py."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshfake import write_key
from tcsession.errors import TcsessionError
from tcsession.inventory import java_regex_problem, load_inventory, send_options_value

ROOT = Path(__file__).resolve().parents[1]
INV = ROOT / ".venv" / "bin" / "inv"

SSH = '[ssh]\nkey = "id_test"\n'
NGINX = '[nginx.web]\naddress = "192.0.2.10"\n'
TC1 = '[tomcat.tc1]\naddress = "192.0.2.11"\n'
TC2 = '[tomcat.tc2]\naddress = "192.0.2.12"\n'
GOOD = SSH + NGINX + TC1 + TC2


def addr(old: str, new: str) -> str:
    return GOOD.replace(f'"{old}"', f'"{new}"')


def key(name: str) -> str:
    return GOOD.replace('"id_test"', f'"{name}"')


# (id, inventory text, fragments the one line must hold: where, what, fix)
CASES = [
    # addresses: a host's own unicast IPv4 address, nothing else
    ("hostname", addr("192.0.2.11", "tomcat1.example"),
     ['[tomcat.tc1] address = "tomcat1.example" is a host name', "getent ahostsv4 tomcat1.example", "write the address"]),
    ("localhost-name", addr("192.0.2.12", "localhost"),
     ['[tomcat.tc2] address = "localhost" is a host name', "write the address"]),
    ("ipv6", addr("192.0.2.11", "2001:db8::11"),
     ['[tomcat.tc1] address = "2001:db8::11" is an IPv6 address', "does not support", "use the host's IPv4 address"]),
    ("ipv4-mapped-ipv6", addr("192.0.2.11", "::ffff:192.0.2.11"),
     ['[tomcat.tc1] address = "::ffff:192.0.2.11" is an IPv6 address', "IPv4 address"]),
    ("ipv6-loopback", addr("192.0.2.10", "::1"), ['[nginx.web] address = "::1" is an IPv6 address']),
    ("loopback-tomcat", addr("192.0.2.11", "127.0.0.1"),
     ['[tomcat.tc1] address = "127.0.0.1" is a loopback address', "use the host's own unicast IPv4 address"]),
    ("loopback-other", addr("192.0.2.12", "127.1.2.3"), ['[tomcat.tc2] address = "127.1.2.3" is a loopback']),
    ("loopback-nginx", addr("192.0.2.10", "127.0.0.1"), ['[nginx.web] address = "127.0.0.1" is a loopback']),
    ("unspecified", addr("192.0.2.11", "0.0.0.0"),
     ['[tomcat.tc1] address = "0.0.0.0" is "every address"', "own unicast IPv4 address"]),
    ("this-network", addr("192.0.2.11", "0.1.2.3"), ['address = "0.1.2.3" is in 0.0.0.0/8']),
    ("multicast-host", addr("192.0.2.11", "228.0.0.4"),
     ['[tomcat.tc1] address = "228.0.0.4" is a multicast group', "[delta] multicast_address"]),
    ("broadcast", addr("192.0.2.12", "255.255.255.255"), ['address = "255.255.255.255" is the broadcast address']),
    ("reserved", addr("192.0.2.12", "240.0.0.7"), ['address = "240.0.0.7" is in the reserved range']),
    ("address-spaces", addr("192.0.2.11", " 192.0.2.11"),
     ['[tomcat.tc1] address = " 192.0.2.11" has spaces around it', 'write "192.0.2.11"']),
    ("address-cidr", addr("192.0.2.11", "192.0.2.11/24"),
     ['address = "192.0.2.11/24" is a network, not an address', '"192.0.2.11"']),
    ("address-leading-zero", addr("192.0.2.11", "192.0.2.011"), ['address = "192.0.2.011" is not an IPv4 address']),
    # jvm_route
    ("jvm-route-case", GOOD.replace(TC2, TC2 + 'jvm_route = "TC1"\n'),
     ['[tomcat.tc2] jvm_route "TC1" differs only in case from "tc1" of [tomcat.tc1]', "its own jvm_route"]),
    ("jvm-route-case-explicit", GOOD.replace(TC1, TC1 + 'jvm_route = "Node"\n').replace(TC2, TC2 + 'jvm_route = "NODE"\n'),
     ['[tomcat.tc2] jvm_route "NODE" differs only in case', "nginx ignores case"]),
    ("jvm-route-5000", GOOD.replace(TC1, TC1 + f'jvm_route = "{"a" * 5000}"\n'),
     ["[tomcat.tc1] jvm_route is 5000 characters long, more than 64", "write a shorter jvm_route"]),
    ("user-5000", SSH + f'user = "{"u" * 5000}"\n' + NGINX + TC1 + TC2,
     ["[ssh] user is 5000 characters long, more than 32", "shorter user"]),
    ("known-hosts-huge", SSH + f'known_hosts = "{"k/" * 3000}"\n' + NGINX + TC1 + TC2,
     ["[ssh] known_hosts is 6000 characters long, more than 4096"]),
    ("control-char", SSH + 'known_hosts = "kh\\u001b[31m"\n' + NGINX + TC1 + TC2,
     ["[ssh] known_hosts", "control character U+001B", "remove it"]),
    ("newline-in-user", SSH + 'user = "ops\\nroot"\n' + NGINX + TC1 + TC2, ["[ssh] user", "U+000A", "remove it"]),
    # [msm] regexes
    ("locking-paren", GOOD + '[msm]\nsticky = false\nlocking_mode = "uriPattern:("\n',
     ['[msm] locking_mode = "uriPattern:(" has a pattern that is not a valid regular expression',
      "missing ), unterminated subpattern", "fix the regex after uriPattern:"]),
    ("locking-class", GOOD + '[msm]\nlocking_mode = "uriPattern:/app/[a-"\n',
     ['[msm] locking_mode = "uriPattern:/app/[a-"', "unterminated character set"]),
    ("ignore-star", GOOD + '[msm]\nrequest_uri_ignore_pattern = "*.png"\n',
     ['[msm] request_uri_ignore_pattern = "*.png" is not a valid regular expression (nothing to repeat',
      'or set "" to ignore nothing']),
    ("ignore-unbalanced", GOOD + '[msm]\nrequest_uri_ignore_pattern = ".*\\\\.(png|gif"\n',
     ["[msm] request_uri_ignore_pattern", "missing ), unterminated subpattern", "fix it"]),
    ("ignore-bad-escape", GOOD + '[msm]\nrequest_uri_ignore_pattern = ".*\\\\.png\\\\"\n',
     ["[msm] request_uri_ignore_pattern", "bad escape (end of pattern)"]),
    # [delta] channel_send_options
    ("send-99", GOOD + "[delta]\nchannel_send_options = 99\n",
     ["[delta] channel_send_options = 99 sets 1 (byte_message), 32 (udp), 64 (multicast)", "e.g. 6"]),
    ("send-byte", GOOD + "[delta]\nchannel_send_options = 1\n", ["channel_send_options = 1 sets 1 (byte_message)"]),
    ("send-secure", GOOD + "[delta]\nchannel_send_options = 22\n", ["channel_send_options = 22 sets 16 (secure)"]),
    ("send-multicast", GOOD + "[delta]\nchannel_send_options = 64\n", ["= 64 sets 64 (multicast)", "2 (use_ack)"]),
    ("send-huge", GOOD + "[delta]\nchannel_send_options = 4096\n", ["= 4096 has bits no Tomcat Channel defines"]),
    ("send-negative", GOOD + "[delta]\nchannel_send_options = -6\n", ["= -6 is negative", "e.g. 6"]),
    ("send-unknown-name", GOOD + '[delta]\nchannel_send_options = "sync,fast"\n',
     ['[delta] channel_send_options = "sync,fast" has an unknown option "fast"', '"async,use_ack"']),
    ("send-float", GOOD + "[delta]\nchannel_send_options = 6.0\n",
     ["[delta] channel_send_options = 6.0 is a float, expected an integer or a string"]),
    # [msm] maven_repo
    ("maven-dir-missing", GOOD + '[msm]\nmaven_repo = "no-such-m2"\n',
     ['[msm] maven_repo = "no-such-m2": no such directory', "Maven-layout directory", "https://repo.maven.apache.org"]),
    ("maven-dir-is-file", GOOD + '[msm]\nmaven_repo = "id_test"\n', ['maven_repo = "id_test": is not a directory']),
    # private key files
    ("key-world-readable", key("key_0644"),
     ['[ssh] key = "key_0644":', "can be read by group or others (mode 0644)", "chmod 600"]),
    ("key-group-readable", key("key_0640"), ["(mode 0640)", "chmod 600"]),
    ("key-garbage", key("key_garbage"), ['key = "key_garbage":', "is not a private key", "ssh-keygen -t ed25519"]),
    ("key-empty", key("key_empty"), ["key_empty is empty", "ssh-keygen"]),
    ("key-public", key("key_pub"), ["key_pub is a public key", "the file without .pub"]),
    ("key-putty", key("key_ppk"), ["key_ppk is a PuTTY key", "puttygen"]),
    ("key-bad-base64", key("key_b64"), ["key_b64 is damaged (its base64 body does not decode)"]),
    ("key-not-openssh-body", key("key_magic"), ["key_magic is damaged (not an openssh-key-v1 body)"]),
    ("key-encrypted-openssh", key("key_enc"), ["key_enc is encrypted with a passphrase", "ssh-add", "agent = true"]),
    ("key-encrypted-pem", key("key_pem_enc"), ["key_pem_enc is encrypted", "ssh-add"]),
    ("key-encrypted-pkcs8", key("key_p8_enc"), ["key_p8_enc is encrypted", "agent = true"]),
    ("key-directory", key("keydir"), ['key = "keydir": is a directory, not a key file', "fix the path"]),
    ("key-huge", key("key_huge"), ["key_huge is 70000 bytes, too big"]),
]


@pytest.fixture
def site(tmp_path):
    """A directory with a good key and one bad key file of each kind; returns the inventory path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    write_key(tmp_path / "id_test")
    good = (tmp_path / "id_test").read_text()

    def put(name, text, mode=0o600):
        p = tmp_path / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        p.chmod(mode)

    put("key_0644", good, 0o644)
    put("key_0640", good, 0o640)
    put("key_garbage", "hello, I am not a key\n")
    put("key_empty", "")
    put("key_pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ1cQ me@here\n")
    put("key_ppk", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n")
    put("key_b64", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn!!!*\n-----END OPENSSH PRIVATE KEY-----\n")
    put("key_magic", "-----BEGIN OPENSSH PRIVATE KEY-----\n" + base64.b64encode(b"x" * 40).decode()
        + "\n-----END OPENSSH PRIVATE KEY-----\n")
    write_key(tmp_path / "key_enc", passphrase=b"pw")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    put("key_pem_enc", rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.BestAvailableEncryption(b"pw")))
    put("key_p8_enc", rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pw")))
    (tmp_path / "keydir").mkdir()
    put("key_huge", "x" * 70000)
    return tmp_path / "site-a.toml"


def refusal(path: Path, text: str) -> str:
    path.write_text(text)
    with pytest.raises(TcsessionError) as info:
        load_inventory(path)
    return str(info.value)


@pytest.mark.parametrize("text,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line_naming_file_key_and_fix(site, text, fragments):
    msg = refusal(site, text)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(f"{site}: [")  # the file as given, then the table
    assert ";" in msg  # what is wrong; then what to do
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_cases_differ_from_good_only_in_the_fault(site):
    """Guard the table: the building blocks load, and so do the valid neighbours of each fault."""
    site.write_text(GOOD)
    load_inventory(site)
    (site.parent / "m2").mkdir()
    for ok in ('[msm]\nsticky = false\nlocking_mode = "uriPattern:/app/(a|b)+"\n',
               '[msm]\nrequest_uri_ignore_pattern = ""\nmaven_repo = "m2"\n',
               '[msm]\nrequest_uri_ignore_pattern = "\\\\p{Alpha}+\\\\.(?<ext>png)$"\n',  # Java-only syntax
               '[delta]\nchannel_send_options = 10\n', '[delta]\nchannel_send_options = "sync,use_ack"\n',
               '[delta]\nchannel_send_options = 0\n'):
        site.write_text(GOOD + ok)
        load_inventory(site)
    site.write_text(GOOD.replace(TC1, TC1 + 'jvm_route = "Node_1"\n'))
    assert load_inventory(site).host("tc1").jvm_route == "Node_1"
    site.write_text(addr("192.0.2.11", "169.254.0.11"))  # link-local is a unicast address
    load_inventory(site)


def test_channel_send_option_names_add_up(site):
    assert send_options_value("sync,use_ack") == 6 == send_options_value(6)
    assert send_options_value("async, USE_ACK") == 10
    site.write_text(GOOD + '[delta]\nchannel_send_options = "asynchronous,use_ack"\n')
    assert load_inventory(site).delta.channel_send_options == 10


@pytest.mark.parametrize("pattern,ok", [
    (r".*\.(ico|png)$", True), (r"\Q(literal\E.*", True), (r"\p{Lu}\P{Digit}", True),
    (r"(?<year>\d{4})-\k<year>", True), (r"a*+b", True), (r"(", False), (r"[z-a]", False), (r"a{2,1}", False),
])
def test_java_regex_approximation(pattern, ok):
    assert (java_regex_problem(pattern) is None) is ok


def test_encrypted_key_is_fine_with_the_agent(site):
    site.write_text(key("key_enc").replace('[ssh]\n', '[ssh]\nagent = true\n'))
    assert load_inventory(site).nginx.ssh.agent is True


# --------------------------------------------------------------------------- through `inv`

CLI = [  # (id, case id or None, extra inventory text, task arguments, fragments)
    ("cli-hostname", "hostname", None, ["status"], ["is a host name"]),
    ("cli-loopback", "loopback-tomcat", None, ["deploy", "--mode=delta", "--dry-run"], ["is a loopback address"]),
    ("cli-ipv6", "ipv6", None, ["history"], ["is an IPv6 address"]),
    ("cli-jvm-case", "jvm-route-case", None, ["deploy", "--mode=msm"], ["differs only in case"]),
    ("cli-regex", "locking-paren", None, ["deploy", "--mode=msm", "--dry-run"], ["not a valid regular expression"]),
    ("cli-send-options", "send-99", None, ["rollback"], ["sets 1 (byte_message)"]),
    ("cli-maven", "maven-dir-missing", None, ["deploy", "--mode=msm"], ["no such directory"]),
    ("cli-key-mode", "key-world-readable", None, ["status", "--json"], ["chmod 600"]),
    ("cli-key-encrypted", "key-encrypted-openssh", None, ["lab.status"], ["ssh-add"]),
    ("cli-requests-abc", None, GOOD, ["status", "--requests=abc"], ["--requests=abc: not a whole number", "e.g. --requests=10"]),
    ("cli-requests-negative", None, GOOD, ["status", "--requests=-3"], ["--requests=-3: not a whole number from 0"]),
    ("cli-tomcats-x", None, GOOD, ["lab.up", "--tomcats=x"], ["--tomcats=x: not a whole number from 2 to 100"]),
    ("cli-tomcats-one", None, GOOD, ["lab.up", "--tomcats=1"], ["--tomcats=1: not a whole number from 2"]),
    ("cli-release", None, GOOD, ["lab.up", "--release=buster"], ["--release=buster: not one of bookworm, bullseye"]),
    ("cli-mode", None, GOOD, ["deploy", "--mode=deltas"], ["--mode=deltas: not one of delta, msm"]),
    ("cli-rollback-to", None, GOOD, ["rollback", "--to=../../etc"], ["not a deploy id", "history` lists the ids"]),
]


@pytest.mark.parametrize("case,text,args,fragments", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_inv_exits_2_with_one_line(site, case, text, args, fragments):
    text = text if text is not None else next(c[1] for c in CASES if c[0] == case)
    site.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "TCSESSION_DEBUG"}
    p = subprocess.run([str(INV), *args, "-i", str(site)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL, env=env)
    out = (p.stdout + p.stderr).strip()
    if "--json" in args:  # the JSON on stdout (failures too: docs/cli.md), the one line on stderr
        import json

        d = json.loads(p.stdout)
        assert d["schema"] == f"tcsession.{args[0]}/1" and d["ok"] is False and d["exit"] == 2
        assert d["errors"] == [p.stderr.strip()[len("tcsession: "):]]
        out = p.stderr.strip()
    assert p.returncode == 2, out
    assert "Traceback" not in out and "\n" not in out, out
    assert out.startswith("tcsession: ")
    if case is not None:
        assert out.startswith(f"tcsession: {site}: [")
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in {out!r}"


def test_unexpected_exception_is_one_line_naming_a_bug(tmp_path):
    """A bug (not an expected failure) still reaches the user as one line, traceback on request."""
    code = ("import sys; sys.path.insert(0, %r); import tasks\n"
            "@tasks._fail_cleanly\ndef history(c):\n    {}['missing']\n"
            "try:\n    history(None)\nexcept tasks.Exit as e:\n    print(e.message); print(e.code)\n") % str(ROOT)
    env = {k: v for k, v in os.environ.items() if k != "TCSESSION_DEBUG"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert p.stdout.splitlines() == ["tcsession: internal error in history: KeyError: 'missing' -- this is a bug "
                                     "in tcsession; run again with TCSESSION_DEBUG=1 for the traceback and report it",
                                     "1"], p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       env={**env, "TCSESSION_DEBUG": "1"})
    assert "Traceback" in p.stderr and "KeyError" in p.stderr
