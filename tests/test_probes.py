"""Parsers of command output, fed with captured and hand-written ss output and os-release files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcsession.errors import TcsessionError
from tcsession.probes import (
    Listener,
    is_wildcard,
    listening_on,
    parse_os_release,
    parse_ss,
    reachable_on,
)

SS = Path(__file__).parent / "data" / "ss"


def read(name: str) -> str:
    return (SS / name).read_text()


# ---------------------------------------------------------------------------- captured here

def test_local_capture_tcp_without_and_with_header():
    plain = parse_ss(read("local-ss-Hntl.txt"))
    headed = parse_ss(read("local-ss-ntl.txt"))
    assert read("local-ss-ntl.txt").startswith("State")
    assert plain == headed
    assert plain and all(listener.proto == "tcp" for listener in plain)
    assert all(isinstance(listener.port, int) for listener in plain)


def test_local_capture_udp_may_be_empty():
    """`ss -Hnul` on a machine with no UDP listener prints nothing (the capture here): that is no
    listener, with or without the protocol named, not an error. (This compared the parse of the
    empty file with itself, which could not fail.)"""
    text = read("local-ss-Hnul.txt")
    assert text == ""  # what the capture is: if it ever holds lines, this test must read them
    assert parse_ss(text) == ()
    assert parse_ss(text, proto="udp") == ()
    # the same command's output with listeners is read as UDP, the protocol taken from the argument
    udp = parse_ss("UNCONN 0 0 10.153.0.112:45564 0.0.0.0:*\n", proto="udp")
    assert udp == (Listener("udp", "10.153.0.112", 45564),)


def test_local_capture_netid_column_skips_unix_and_netlink():
    listeners = parse_ss(read("local-ss-Hnl.txt"))
    text = read("local-ss-Hnl.txt")
    assert "u_dgr" in text or "u_str" in text or "nl " in text
    expected = sum(1 for line in text.splitlines() if line.split()[:1] in (["tcp"], ["udp"]))
    assert len(listeners) == expected
    assert {listener.proto for listener in listeners} <= {"tcp", "udp"}
    tcp = parse_ss(read("local-ss-Hntl.txt"))
    assert [x for x in listeners if x.proto == "tcp"] == list(tcp)


# ------------------------------------------------------------------- Debian 12 (iproute2 6.1)

DEBIAN_TCP = (
    Listener("tcp", "0.0.0.0", 80),
    Listener("tcp", "10.153.0.112", 11211),
    Listener("tcp", "127.0.0.1", 11211),
    Listener("tcp", "0.0.0.0", 22),
    Listener("tcp", "::ffff:127.0.0.1", 8005),
    Listener("tcp", "::ffff:10.153.0.112", 4000),
    Listener("tcp", "*", 8080, dual_stack=True),
    Listener("tcp", "::", 80),
    Listener("tcp", "::", 22),
)


def test_debian12_tcp():
    assert parse_ss(read("debian12-ss-Hntl.txt")) == DEBIAN_TCP


def test_debian12_tcp_with_process_column():
    assert parse_ss(read("debian12-ss-Hntlp.txt")) == DEBIAN_TCP


def test_debian12_udp_unconn_multicast_and_scoped():
    assert parse_ss(read("debian12-ss-Hnul.txt")) == (
        Listener("udp", "228.0.0.4", 45564),
        Listener("udp", "127.0.0.53", 53, interface="lo"),
        Listener("udp", "fe80::5054:ff:fe12:3456", 546, interface="eth0"),
        Listener("udp", "*", 45564, dual_stack=True),
    )


def test_debian12_header_glued_process_column_and_scoped_ipv6():
    listeners = parse_ss(read("debian12-ss-ntl.txt"))
    assert Listener("tcp", "fe80::1", 22, interface="eth0") in listeners
    assert len(listeners) == 6
    assert str(Listener("tcp", "fe80::1", 22, interface="eth0")) == "[fe80::1]%eth0:22/tcp"


def test_debian12_questions():
    tcp = parse_ss(read("debian12-ss-Hntl.txt"))
    assert listening_on(tcp, 11211) == ["10.153.0.112", "127.0.0.1"]
    assert listening_on(tcp, 80) == ["0.0.0.0", "::"]
    assert listening_on(tcp, 8080) == ["*"]
    assert listening_on(tcp, 4000) == ["::ffff:10.153.0.112"]
    assert listening_on(tcp, 45564) == []
    assert listening_on(tcp, 11211, proto="udp") == []

    # memcached: on the private address and loopback, not on another address
    assert reachable_on(tcp, "10.153.0.112", 11211)
    assert reachable_on(tcp, "127.0.0.1", 11211)
    assert not reachable_on(tcp, "10.153.0.113", 11211)
    # the cluster receiver bound by Java shows the mapped form; same address
    assert reachable_on(tcp, "10.153.0.112", 4000)
    assert reachable_on(tcp, "::ffff:10.153.0.112", 4000)
    assert not reachable_on(tcp, "127.0.0.1", 4000)
    # Tomcat's shutdown port is loopback only
    assert reachable_on(tcp, "127.0.0.1", 8005)
    assert not reachable_on(tcp, "10.153.0.112", 8005)
    # Java's dual-stack wildcard takes both families
    assert reachable_on(tcp, "10.153.0.112", 8080)
    assert reachable_on(tcp, "fd00::5", 8080)
    # nginx: 0.0.0.0 for IPv4, [::] (V6ONLY) for IPv6
    assert reachable_on(tcp, "192.0.2.1", 80)
    assert reachable_on(tcp, "2001:db8::1", 80)
    assert not reachable_on(tcp, "10.153.0.112", 9999)
    assert not reachable_on(tcp, "10.153.0.112", 80, proto="udp")


def test_v6only_wildcard_does_not_take_ipv4():
    only6 = parse_ss("LISTEN 0 511 [::]:80 [::]:*\n")
    assert only6 == (Listener("tcp", "::", 80),)
    assert reachable_on(only6, "::1", 80)
    assert not reachable_on(only6, "10.0.0.1", 80)
    only4 = parse_ss("LISTEN 0 511 0.0.0.0:80 0.0.0.0:*\n")
    assert not reachable_on(only4, "::1", 80)


def test_udp_multicast_listener():
    udp = parse_ss(read("debian12-ss-Hnul.txt"))
    assert listening_on(udp, 45564, proto="udp") == ["228.0.0.4", "*"]
    assert reachable_on(udp, "228.0.0.4", 45564, proto="udp")
    assert listening_on(udp, 53, proto="udp") == ["127.0.0.53%lo"]
    assert reachable_on(udp, "127.0.0.53", 53, proto="udp")


# ---------------------------------------------------------------- CentOS 7 (iproute2 3.10)

def test_centos7_tcp():
    assert parse_ss(read("centos7-ss-ntl.txt")) == (
        Listener("tcp", "*", 22, dual_stack=True),
        Listener("tcp", "127.0.0.1", 25),
        Listener("tcp", "10.153.0.112", 11211),
        Listener("tcp", "::", 22, dual_stack=True),
        Listener("tcp", "::1", 25),
        Listener("tcp", "::", 8080, dual_stack=True),
        Listener("tcp", "::ffff:127.0.0.1", 8005),
        Listener("tcp", "::ffff:10.153.0.112", 4000),
    )


def test_centos7_questions():
    tcp = parse_ss(read("centos7-ss-ntl.txt"))
    # Tomcat 7's Java socket shows as :::8080; old ss cannot show V6ONLY: taken as dual stack
    assert reachable_on(tcp, "10.153.0.112", 8080)
    assert reachable_on(tcp, "10.153.0.112", 4000)
    assert not reachable_on(tcp, "10.153.0.113", 4000)
    assert reachable_on(tcp, "127.0.0.1", 25)
    assert not reachable_on(tcp, "10.153.0.112", 25)
    assert listening_on(tcp, 22) == ["*", "::"]


def test_centos7_udp():
    assert parse_ss(read("centos7-ss-nul.txt")) == (
        Listener("udp", "228.0.0.4", 45564),
        Listener("udp", "127.0.0.1", 323),
        Listener("udp", "::1", 323),
    )


# ------------------------------------------------------------------------------ edge cases

def test_empty_and_blank():
    assert parse_ss("") == ()
    assert parse_ss("\n\n") == ()
    assert parse_ss("State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n") == ()


def test_proto_argument_overrides():
    assert parse_ss("UNCONN 0 0 0.0.0.0:5353 0.0.0.0:*", proto="udp") == (Listener("udp", "0.0.0.0", 5353),)
    assert parse_ss("LISTEN 0 0 0.0.0.0:80 0.0.0.0:*", proto="tcp")[0].proto == "tcp"
    with pytest.raises(TcsessionError, match="protocol 'sctp' is not tcp or udp"):
        parse_ss("", proto="sctp")


def test_port_star_skipped():
    assert parse_ss("UNCONN 0 0 0.0.0.0:* 0.0.0.0:*\n") == ()


@pytest.mark.parametrize("line, message", [
    ("LISTEN 0 128 0.0.0.0:http 0.0.0.0:*", r"cannot read local address '0\.0\.0\.0:http'; run ss with -n"),
    ("LISTEN 0 128 0.0.0.0:70000 0.0.0.0:*", r"cannot read local address"),
    ("LISTEN 0 128 [10.0.0.1]:80 *:*", r"cannot read local address"),
    ("LISTEN 0 128 host.example:80 *:*", r"cannot read local address"),
    ("LISTEN 0 128", r"cannot read 'LISTEN 0 128'"),
    ("Active Internet connections (only servers)", r"cannot read"),
    ("ESTAB 0 0 10.0.0.1:22 10.0.0.2:5555", r"state ESTAB does not tell tcp from udp"),
])
def test_unreadable_lines(line, message):
    with pytest.raises(TcsessionError, match=r"^ss output line \d+: .*" + message) as info:
        parse_ss(line + "\n")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("address, expected", [
    ("0.0.0.0", True), ("::", True), ("[::]", True), ("*", True), ("0:0:0:0:0:0:0:0", True),
    ("::%eth0", True), ("127.0.0.1", False), ("10.153.0.112", False), ("::1", False),
    ("::ffff:0.0.0.0", False), ("", False), ("localhost", False),
])
def test_is_wildcard(address, expected):
    assert is_wildcard(address) is expected


def test_reachable_on_needs_an_ip():
    with pytest.raises(TcsessionError, match="'tomcat1' is not an IP address"):
        reachable_on((), "tomcat1", 8080)


# ------------------------------------------------------------------------------ os-release

DEBIAN12 = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

CENTOS7 = """\
NAME="CentOS Linux"
VERSION="7 (Core)"
ID="centos"
ID_LIKE="rhel fedora"
VERSION_ID="7"
PRETTY_NAME="CentOS Linux 7 (Core)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:centos:centos:7"
HOME_URL="https://www.centos.org/"
BUG_REPORT_URL="https://bugs.centos.org/"

CENTOS_MANTISBT_PROJECT="CentOS-7"
CENTOS_MANTISBT_PROJECT_VERSION="7"
REDHAT_SUPPORT_PRODUCT="centos"
REDHAT_SUPPORT_PRODUCT_VERSION="7"

"""


def test_os_release_debian12():
    info = parse_os_release(DEBIAN12)
    assert info["ID"] == "debian"
    assert info["VERSION_ID"] == "12"
    assert info["VERSION_CODENAME"] == "bookworm"
    assert info["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)"
    assert len(info) == 9


def test_os_release_centos7():
    info = parse_os_release(CENTOS7)
    assert info["ID"] == "centos"
    assert info["ID_LIKE"] == "rhel fedora"
    assert info["VERSION_ID"] == "7"
    assert info["CPE_NAME"] == "cpe:/o:centos:centos:7"


def test_os_release_quotes_escapes_comments():
    text = """\
# a comment
   # an indented comment
ID=rocky
ID_LIKE='rhel centos fedora'
VARIANT="Server \\"Edition\\" \\$HOME \\\\ \\`x\\`"
EMPTY=
EMPTY_QUOTED=""
SPACES =  "  padded  "
not a line
BAD KEY=1
UNTERMINATED="abc
9STARTS_WITH_DIGIT=1
ID=rocky-again
"""
    info = parse_os_release(text)
    assert info["ID"] == "rocky-again"  # the last one wins
    assert info["ID_LIKE"] == "rhel centos fedora"
    assert info["VARIANT"] == 'Server "Edition" $HOME \\ `x`'
    assert info["EMPTY"] == ""
    assert info["EMPTY_QUOTED"] == ""
    assert info["SPACES"] == "  padded  "
    assert "UNTERMINATED" not in info
    assert "BAD KEY" not in info and "9STARTS_WITH_DIGIT" not in info
    assert parse_os_release("") == {}


def test_parse_memcached_probe():
    from tcsession.probes import parse_memcached_probe

    text = ("@@memcached 10.153.0.112:11211\nSTAT version 1.6.18\nSTAT curr_connections 2\nSTAT curr_items 5\n"
            "@@memcached 10.153.0.113:11211\n")
    assert parse_memcached_probe(text) == {
        "10.153.0.112:11211": {"version": "1.6.18", "curr_connections": "2", "curr_items": "5"},
        "10.153.0.113:11211": {}}


def test_memcached_probe_asks_every_node_at_once_in_one_bash():
    """shell.memcached_probe_script run for real (bash's /dev/tcp) against, on loopback: two
    servers answering `stats` as memcached does (a test double: the protocol lines memcached
    sends, not memcached; the lab's status and deploy checks ask real memcached), a closed port,
    and one that accepts and never answers (its read times out). Every node gets its section,
    whatever order the subshells finish in."""
    import socket
    import subprocess
    import threading
    import time

    from tcsession.probes import parse_memcached_probe
    from tcsession.shell import memcached_probe_script

    def serve(sock, items):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if items is not None:  # answered in pieces, as a busy memcached may
                asked = b""
                while b"quit\r\n" not in asked:  # all of it read: closing on unread bytes would reset
                    asked += conn.recv(100) or b"quit\r\n"
                for part in (b"STAT pid 1\r\nSTAT version 1.6.18\r\n", b"STAT curr_connections 3\r\n",
                             b"STAT curr_items %d\r\nEND\r\n" % items):
                    conn.sendall(part)
                    time.sleep(0.002)
                conn.close()
            # else: keep it open, say nothing

    socks = []
    for items in (7, 8, None):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        threading.Thread(target=serve, args=(s, items), daemon=True).start()
        socks.append(s)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    ports = [s.getsockname()[1] for s in socks]
    nodes = [("127.0.0.1", ports[0]), ("127.0.0.1", closed_port), ("127.0.0.1", ports[2]), ("127.0.0.1", ports[1])]
    outs = []
    try:  # the silent node once, then the answering ones many times (their answers race)
        outs.append(subprocess.run(["sh", "-c", memcached_probe_script(nodes)], capture_output=True, text=True,
                                   timeout=20).stdout)
        quick = [n for n in nodes if n[1] != ports[2]]
        outs += [subprocess.run(["sh", "-c", memcached_probe_script(quick)], capture_output=True, text=True,
                                timeout=20).stdout for _ in range(15)]
    finally:
        for s in socks:
            s.close()
    seen = parse_memcached_probe(outs[0])
    assert set(seen) == {f"127.0.0.1:{p}" for _, p in nodes}
    assert seen[f"127.0.0.1:{closed_port}"] == {} and seen[f"127.0.0.1:{ports[2]}"] == {}
    for out in outs:  # each node's lines under its own header, never the other's
        seen = parse_memcached_probe(out)
        for p, items in ((ports[0], "7"), (ports[1], "8")):
            assert seen[f"127.0.0.1:{p}"] == {"version": "1.6.18", "curr_connections": "3", "curr_items": items}, out
    assert memcached_probe_script([]) == ""
