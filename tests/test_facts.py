"""The facts parser on output captured from lab hosts (Debian 12, Tomcat 10.1 installed on tomcat1)."""

from pathlib import Path

from tcsession.facts import parse_facts, tomcat_major

DATA = Path(__file__).parent / "data"


def test_facts_of_a_host_with_tomcat():
    f = parse_facts((DATA / "facts/bookworm-tomcat1.txt").read_text())
    assert f.hostname == "tomcat1"
    assert f.system_state == "running" and f.failed_units == ()
    assert f.package_manager == "apt-get"
    assert f.os["VERSION_CODENAME"] == "bookworm" and f.os_short == "debian 12 (bookworm)"
    assert set(f.packages) == {"tomcat10"} and tomcat_major(f.packages["tomcat10"]) == 10
    assert f.active["tomcat10"] == "active" and f.active["nginx"] == "inactive"
    assert {(l.proto, l.port) for l in f.listeners} >= {("tcp", 22), ("tcp", 8080)}
    server = f.files["/etc/tomcat10/server.xml"]
    assert server.content == (DATA / "debian-bookworm-tomcat10/server.xml").read_bytes()
    assert server.mode == "640" and server.owner == "root:tomcat"
    assert f.files["/etc/nope"].content is None


def test_facts_of_a_fresh_host():
    f = parse_facts((DATA / "facts/bookworm-nginx.txt").read_text())
    assert f.hostname == "nginx" and f.packages == {} and f.files["/etc/tomcat10/server.xml"].content is None


def test_tomcat_major_from_package_versions():
    assert tomcat_major("10.1.60-1~deb12u1") == 10
    assert tomcat_major("7.0.76-16.el7_9") == 7
    assert tomcat_major("2:9.0.43-2~deb11u9") == 9
    assert tomcat_major("garbage") is None
