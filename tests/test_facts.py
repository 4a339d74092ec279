"""The facts parser on output captured from lab hosts (Debian 12): a fresh host, and a cluster
deployed in delta mode."""

from pathlib import Path

from tcsession.facts import parse_facts, parse_members
from tcsession.tomcat import tomcat_major

DATA = Path(__file__).parent / "data"


def test_facts_of_a_deployed_tomcat():
    f = parse_facts((DATA / "facts/bookworm-delta-tomcat1.txt").read_text())
    assert f.hostname == "tomcat1"
    assert f.system_state == "running" and f.failed_units == ()
    assert f.package_manager == "apt-get"
    assert f.os["VERSION_CODENAME"] == "bookworm" and f.os_short == "debian 12 (bookworm)"
    assert set(f.packages) == {"tomcat10", "curl"} and tomcat_major(f.packages["tomcat10"]) == 10
    assert f.active["tomcat10"] == "active" and f.active["nginx"] == "inactive"
    assert {(l.proto, l.port) for l in f.listeners} >= {("tcp", 22), ("tcp", 8080), ("tcp", 4000),
                                                        ("udp", 45564)}
    server = f.files["/etc/tomcat10/server.xml"]
    assert b"tcsession: managed cluster" in server.content and server.content.startswith(b"<?xml")
    assert server.mode == "640" and server.owner == "root:tomcat"
    assert f.files["/etc/nope"].content is None
    assert parse_members(f.cluster_log) == ("10.153.0.113:4000",)


def test_facts_of_nginx_show_the_default_site_link_removed():
    f = parse_facts((DATA / "facts/bookworm-delta-nginx.txt").read_text())
    assert "nginx" in f.packages and f.active["nginx"] == "active"
    assert f.files["/etc/nginx/sites-enabled/default"].content is None
    assert f.files["/etc/nginx/sites-enabled/default"].link is None


def test_facts_of_a_fresh_host():
    f = parse_facts((DATA / "facts/bookworm-fresh-tomcat1.txt").read_text())
    assert f.hostname == "tomcat1" and set(f.packages) == {"curl"}
    assert f.files["/etc/tomcat10/server.xml"].content is None
    assert f.files["/etc/hostname"].content == b"tomcat1\n"
    assert {"tomcat10", "nginx", "memcached"} <= set(f.available)
    assert f.active["tomcat10"] == "inactive"


def test_members_follow_added_and_disappeared_in_order():
    log = (DATA / "facts/tomcat10-membership.log").read_text()
    assert "disappeared" in log
    assert parse_members(log) == ("10.153.0.112:4000",)
    # The same peer disappearing last: nobody left.
    added = next(l for l in log.splitlines() if "member added" in l)
    gone = next(l for l in log.splitlines() if "disappeared" in l)
    assert parse_members(added + "\n" + gone) == ()
    # Java prints bytes signed: {-64, -88, 1, 2} is 192.168.1.2; a loopback advertiser shows up as is.
    signed = "Replication member added:[org.apache.catalina.tribes.membership.MemberImpl[tcp://{-64, -88, 1, 2}:4000,x]]"
    assert parse_members(signed) == ("192.168.1.2:4000",)
    loop = "Replication member added:[org.apache.catalina.tribes.membership.MemberImpl[tcp://{127, 0, 1, 1}:4000,x]]"
    assert parse_members(loop) == ("127.0.1.1:4000",)


def test_tomcat_major_from_package_versions():
    assert tomcat_major("10.1.60-1~deb12u1") == 10
    assert tomcat_major("7.0.76-16.el7_9") == 7
    assert tomcat_major("2:9.0.43-2~deb11u9") == 9
    assert tomcat_major("garbage") is None
