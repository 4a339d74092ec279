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


def _files_answer(tmp_path, *extra_paths):
    """shell.files_script run for real (sh, this machine's stat, cat and base64) on a directory of
    a regular file, an empty one, a binary one with a space in its name, a symlink, a directory, a
    missing path, and a lib with jars of MSM's family and others."""
    import subprocess

    from tcsession.facts import parse_files, split_sections
    from tcsession.msmjars import MANAGED_JAR_GLOBS
    from tcsession.shell import files_script

    (tmp_path / "server.xml").write_bytes(b"<Server/>\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "bin ary").write_bytes(bytes(range(256)) * 3)
    (tmp_path / "server.xml").chmod(0o640)
    (tmp_path / "link").symlink_to(tmp_path / "server.xml")
    (tmp_path / "dir").mkdir()
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "memcached-session-manager-2.3.2.jar").write_bytes(b"PK\x03\x04msm")
    (lib / "spymemcached-2.12.3.jar").write_bytes(b"PK\x03\x04spy")
    (lib / "catalina.jar").write_bytes(b"PK\x03\x04not ours")
    (lib / "msm-kryo-serializer-2.3.2.jar").symlink_to(lib / "catalina.jar")
    paths = [str(tmp_path / n) for n in ("server.xml", "empty", "bin ary", "link", "dir", "missing", *extra_paths)]
    script = files_script(paths, [str(lib), str(tmp_path / "nolib")], MANAGED_JAR_GLOBS)
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    return parse_files(split_sections(out)), out


def test_files_script_reads_every_file_in_one_stat_and_one_cat(tmp_path):
    files, out = _files_answer(tmp_path)
    assert out.count("@@stat") == 1 and out.count("@@blob") == 1  # not one section per file
    t = str(tmp_path)
    assert files[f"{t}/server.xml"].content == b"<Server/>\n" and files[f"{t}/server.xml"].mode == "640"
    assert files[f"{t}/empty"].content == b""
    assert files[f"{t}/bin ary"].content == bytes(range(256)) * 3
    assert files[f"{t}/link"].content is None and files[f"{t}/link"].link == f"{t}/server.xml"
    assert files[f"{t}/dir"].content is None and files[f"{t}/dir"].link is None
    assert files[f"{t}/missing"].content is None
    jars = sorted(p.rsplit("/", 1)[1] for p in files if "/lib/" in p)
    assert jars == ["memcached-session-manager-2.3.2.jar", "spymemcached-2.12.3.jar"]  # no link, no catalina
    assert files[f"{t}/lib/spymemcached-2.12.3.jar"].content == b"PK\x03\x04spy"
    import os
    import pwd
    assert files[f"{t}/empty"].owner.split(":")[0] == pwd.getpwuid(os.getuid()).pw_name


def test_a_file_that_changed_between_stat_and_cat_is_an_error_not_wrong_content(tmp_path):
    import pytest

    from tcsession.errors import TcsessionError
    from tcsession.facts import parse_files, split_sections

    _, out = _files_answer(tmp_path)
    head, blob = out.split("@@blob\n")
    import base64
    grown = base64.b64encode(base64.b64decode(blob.strip()) + b"more").decode()
    with pytest.raises(TcsessionError, match="changed while it was read"):
        parse_files(split_sections(head + "@@blob\n" + grown + "\n"))


# `systemctl list-units --all --plain --no-legend` as systemd 252 printed it on a lab host (a
# failed transient unit, a running Tomcat; the units that do not exist are absent), and with the
# bullet an older systemd may put before a failed unit.
LIST_UNITS = ("tcsx-fail.service loaded failed failed  /usr/bin/false\n"
              "tomcat10.service  loaded active running Apache Tomcat 10 Web Application Server\n")
LIST_UNITS_BULLET = ("\u25cf tcsx-fail.service loaded failed failed  /usr/bin/false\n"
                     "  tomcat10.service  loaded active running Apache Tomcat 10 Web Application Server\n")


def _units_state_with(systemctl_body: str) -> dict:
    """shell.units_state run by bash with `systemctl` replaced by a shell function (a test double:
    this machine runs no systemd) printing a captured answer, parsed as the facts parse it."""
    import subprocess

    from tcsession import shell
    from tcsession.facts import parse_units

    script = f"systemctl() {{ {systemctl_body}; }}\n" + shell.units_state(("tomcat11", "tomcat10", "tcsx-fail", "memcached"))
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return parse_units(out)


def test_units_state_from_list_units_reads_as_show_did():
    want = {"tomcat11": "inactive", "tomcat10": "active", "tcsx-fail": "failed", "memcached": "inactive"}
    for answer in (LIST_UNITS, LIST_UNITS_BULLET):
        printed = answer.replace("'", "'\\''")
        assert _units_state_with(f"[ \"$1\" = list-units ] && printf '%s' '{printed}'") == want
    # list-units refused (an older systemd): `show` answers, as before
    show = "Id=tomcat10.service\nActiveState=active\n\nId=tomcat11.service\nActiveState=inactive\n"
    assert _units_state_with(f"[ \"$1\" = list-units ] && return 1; printf '%s' '{show}'") == {
        "tomcat10": "active", "tomcat11": "inactive"}


# A lab host's answers (Debian 12) in the forms facts_script asks for them: dpkg-query's one
# `name|version|status` list (installed, left as config files, known and not installed), and
# `ss -Hntul` (tcp and udp listeners, the Netid column first).
DPKG_ANSWER = ("curl|7.88.1-10+deb12u15|ii \n"
               "libtomcat10-java|10.1.60-1~deb12u1|ii \n"
               "needrestart|3.6-4+deb12u3|ii \n"
               "nftables||un \n"
               "nginx-common|1.22.1-9+deb12u3|rc \n"
               "openjdk-17-jre-headless|17.0.17+10-1~deb12u1|ii \n"
               "tomcat10|10.1.60-1~deb12u1|ii \n"
               "tomcat10-common|10.1.60-1~deb12u1|ii \n"
               "unattended-upgrades|2.9.1+nmu3|ii \n")
SS_ANSWER = ("tcp   LISTEN 0      100    10.153.185.112:8080  0.0.0.0:*\n"
             "tcp   LISTEN 0      128           0.0.0.0:22    0.0.0.0:*\n"
             "udp   UNCONN 0      0      10.153.185.112:45564 0.0.0.0:*\n")


def _facts_with(tmp_path, sh: str, dpkg: str, apt_config: str = "") -> "object":
    """shell.facts_script run by `sh` (dash, as Debian's sshd runs it) or bash (the RHEL family's
    sh) with systemctl, dpkg-query, ss and apt-config replaced by scripts first on the PATH (test
    doubles: this machine runs no systemd and no cluster) printing captured answers; parsed as
    deploys parse it."""
    import os
    import subprocess

    from tcsession import shell
    from tcsession.facts import parse_facts

    def printing(text: str) -> str:
        return "printf '%s' '" + text.replace("'", "'\\''") + "'"

    doubles = {
        "systemctl": ('case "$1" in is-system-running) echo running;; is-enabled) echo enabled;; '
                      f"list-units) {printing(LIST_UNITS)};; esac"),
        "dpkg-query": printing(dpkg), "ss": printing(SS_ANSWER), "apt-config": printing(apt_config)}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in doubles.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run([sh, "-c", shell.facts_script()], capture_output=True, text=True, check=True, env=env).stdout
    return parse_facts(out, "tomcat1")


def test_one_dpkg_query_answers_the_packages_and_the_automatic_upgraders(tmp_path):
    apt = 'APT::Periodic::Unattended-Upgrade "1";\nUnattended-Upgrade::Package-Blacklist:: "tomcat";\n'
    for sh in ("sh", "bash"):
        f = _facts_with(tmp_path, sh, DPKG_ANSWER, apt)
        # the cluster's named packages, installed only (nftables is known, not installed)
        assert f.packages == {"curl": "7.88.1-10+deb12u15", "tomcat10": "10.1.60-1~deb12u1"}, sh
        up = f.automatic
        assert up.packages == {"needrestart": "3.6-4+deb12u3", "unattended-upgrades": "2.9.1+nmu3"}
        # the packages of PACKAGE_GLOBS installed: not nginx-common (config files left), not curl
        assert sorted(up.cluster) == ["libtomcat10-java", "openjdk-17-jre-headless", "tomcat10", "tomcat10-common"]
        # unattended-upgrades installed: its timer and apt's settings read
        assert up.timers == {"apt-daily-upgrade.timer": "enabled"}
        assert up.apt == {"APT::Periodic::Unattended-Upgrade": "1"} and up.blacklist == ("tomcat",)
        assert sorted((l.proto, l.port) for l in f.listeners) == [("tcp", 22), ("tcp", 8080), ("udp", 45564)]
        assert f.hostname and f.system_state == "running"


def test_without_unattended_upgrades_installed_its_timer_and_apt_are_not_read(tmp_path):
    left = DPKG_ANSWER.replace("unattended-upgrades|2.9.1+nmu3|ii ", "unattended-upgrades|2.9.1+nmu3|rc ")
    up = _facts_with(tmp_path, "sh", left, 'APT::Periodic::Unattended-Upgrade "1";\n').automatic
    assert up.packages == {"needrestart": "3.6-4+deb12u3"} and up.timers == {} and up.apt == {}
