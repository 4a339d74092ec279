"""The front door's settings beside TLS (issue 21), on real stock files and the real nginx binary:
the operator's own nginx directory in every serving server block, worker_shutdown_timeout in
nginx's main context ([rolling] drain_timeout) with tcsession's wait bounded by it, and the session
cookie's SameSite through a managed CookieProcessor in conf/context.xml ([app] same_site)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from tcsession import cookies, msm, nginx, shell
from tcsession import plan as planning
from tcsession.client import cookie_attributes
from tcsession.errors import TcsessionError
from tcsession.inventory import parse_inventory
from test_plan_golden import captured, shipped, shipped_with_app

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "tomcat"
VERSIONS = ["8.5.100", "9.0.121", "10.1.59", "11.0.25"]
B = [nginx.Backend("tomcat1", "10.153.0.112", 8080, "tomcat1"), nginx.Backend("tomcat2", "10.153.0.113", 8080, "tomcat2")]
INCLUDE = f"include {nginx.OPERATOR_DIR}/*.conf;"


# --------------------------------------------------------------------------- nginx


def test_every_server_that_serves_includes_the_operators_directory_and_a_redirect_does_not():
    plain = nginx.render_site(B)
    assert plain.count(INCLUDE) == 1
    https = nginx.render_site(B, tls=nginx.TlsSite("shop.example.com"))
    servers = https.split("server {")[1:]
    assert "return 301" in servers[0] and INCLUDE not in servers[0]  # the redirect serves nothing
    assert INCLUDE in servers[1]
    migration = nginx.render_site(B, tls=nginx.TlsSite("shop.example.com", redirect_http=False))
    assert migration.count(INCLUDE) == 2  # plain HTTP still serves during a migration: the same settings
    # inside the server block, after tcsession's location: the operator may add locations and headers
    assert https.index(INCLUDE) > https.rindex("location / {") and https.rstrip().endswith("}")


def test_the_main_context_file_sets_worker_shutdown_timeout_and_refuses_nonsense():
    text = nginx.render_main(10)
    assert text.startswith(nginx.HEADER) and "worker_shutdown_timeout 10s;" in text
    with pytest.raises(TcsessionError, match=r"drain_timeout") as info:
        nginx.render_main(0)
    assert "\n" not in str(info.value)
    assert nginx.main_conf_path("apt-get").startswith("/etc/nginx/modules-enabled/")
    assert nginx.main_conf_path("yum") == nginx.main_conf_path("dnf") == "/usr/share/nginx/modules/tcsession-main.conf"


def test_the_wait_for_old_workers_is_bounded_by_the_drain_timeout():
    _, after = shell.nginx_reload_settled(30)
    assert "[ $i -lt 1600 ]" in after and "after 32 s" in after
    _, after = shell.nginx_reload_settled()
    assert "[ $i -lt 600 ]" in after


def nginx_binary_or_skip() -> str:
    from test_nginx import nginx_binary

    binary = nginx_binary()
    if binary is None:
        assert not os.environ.get("TCSESSION_NGINX"), "TCSESSION_NGINX is set but not executable"
        pytest.skip("no nginx binary (set TCSESSION_NGINX; ./dev.sh test does)")
    return binary


def nginx_dump(binary: str, tmp_path: Path, site: str, main: str) -> subprocess.CompletedProcess:
    """`nginx -T` of a Debian-shaped nginx.conf (the main-context include first, then http{} with
    the site) with every path under tmp_path."""
    (tmp_path / "modules-enabled").mkdir(exist_ok=True)
    (tmp_path / "modules-enabled" / "tcsession-main.conf").write_text(main)
    (tmp_path / "tcsession.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\ninclude {tmp_path}/modules-enabled/*.conf;\n"
                    "events {}\nhttp {\n    access_log off;\n"
                    + "".join(f"    {t}_temp_path {tmp_path}/{t};\n" for t in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
                    + f"    include {tmp_path / 'tcsession.conf'};\n}}\n")
    return subprocess.run([binary, "-T", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True,
                          timeout=30)


def test_nginx_takes_the_main_file_and_the_operators_directory_absent_or_with_settings(tmp_path):
    from test_nginx import free_port

    binary = nginx_binary_or_skip()
    site = nginx.render_site(B, listen_port=free_port())
    assert not Path(nginx.OPERATOR_DIR).exists()  # on this machine: the directory absent is accepted
    r = nginx_dump(binary, tmp_path, site, nginx.render_main(10))
    assert r.returncode == 0 and "test is successful" in r.stderr, r.stderr
    assert "worker_shutdown_timeout 10s;" in r.stdout
    own = tmp_path / "own"
    own.mkdir()
    (own / "limits.conf").write_text("client_max_body_size 50m;\nlocation /static/ { return 204; }\n"
                                     'add_header X-Operator "yes" always;\n')
    r = nginx_dump(binary, tmp_path, site.replace(nginx.OPERATOR_DIR, str(own)), nginx.render_main(10))
    assert r.returncode == 0, r.stderr
    assert "client_max_body_size 50m;" in r.stdout and "location /static/" in r.stdout
    # an operator's file that breaks the site is caught by nginx -t (deploy runs it before a reload)
    (own / "bad.conf").write_text("location / { return 204; }\n")  # tcsession's own location, twice
    r = nginx_dump(binary, tmp_path, site.replace(nginx.OPERATOR_DIR, str(own)), nginx.render_main(10))
    assert r.returncode != 0 and "duplicate location" in r.stderr, r.stderr


def test_a_drain_timeout_change_reloads_nginx_and_restarts_no_tomcat():
    p = planning.plan(shipped("[rolling]\ndrain_timeout = 30\n"), captured("deployed"), "delta")
    kinds = [(type(s).__name__, s.host) for s in p.steps if type(s).__name__ != "CheckPorts"]
    assert kinds == [("WriteFiles", "nginx"), ("ApplyNginx", "nginx")], kinds
    write = p.steps[0]
    assert [c.path for c in write.changes] == [nginx.main_conf_path("apt-get")]
    assert b"worker_shutdown_timeout 30s;" in write.changes[0].after
    assert p.steps[1].drain_timeout == 30 and "[ $i -lt 1600 ]" in p.steps[1].script()


def test_the_drain_timeout_reaches_every_drain_of_a_rolling_restart():
    from tcsession.steps import RestartTomcat

    p = planning.plan(shipped("[rolling]\ndrain_timeout = 45\n[delta]\nchannel_send_options = 2\n"),
                      captured("deployed"), "delta")
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert len(restarts) == 2 and all(s.drain.drain_timeout == 45 for s in restarts)
    assert all("[ $i -lt 2350 ]" in s.drain_script() and "[ $i -lt 2350 ]" in s.undrain_script() for s in restarts)


@pytest.mark.parametrize("value,message", [(0, "from 1 to 3600"), ("10s", "expected an integer")])
def test_a_bad_drain_timeout_is_one_line_naming_the_key(value, message):
    text = (ROOT / "hosts.toml").read_text().partition("[rolling]")[0] + f"[rolling]\ndrain_timeout = {value!r}\n"
    with pytest.raises(TcsessionError, match=message) as info:
        parse_inventory(text.replace("'", '"'), Path("/x/hosts.toml"))
    assert "[rolling]" in str(info.value) and "drain_timeout" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- SameSite


@pytest.mark.parametrize("version", VERSIONS)
def test_the_cookie_processor_goes_in_and_out_of_a_stock_context_byte_for_byte(version):
    stock = (FIXTURES / version / "context.xml").read_bytes()
    lax = cookies.patch_context_cookies(stock, "lax", "t")
    added = [l for l in lax.decode().splitlines() if l not in stock.decode().splitlines()]
    assert len(added) == 2 and added[1].strip() == (
        f'<CookieProcessor className="{cookies.PROCESSOR_CLASS}" sameSiteCookies="lax" />')
    assert cookies.read_same_site(lax, "t") == "lax" and cookies.read_same_site(stock, "t") is None
    assert cookies.patch_context_cookies(lax, "lax", "t") == lax  # twice is once
    strict = cookies.patch_context_cookies(lax, "strict", "t")
    assert cookies.read_same_site(strict, "t") == "strict" and strict.count(b"<CookieProcessor") == 1
    assert cookies.patch_context_cookies(strict, None, "t") == stock
    assert cookies.patch_context_cookies(stock, None, "t") == stock


@pytest.mark.parametrize("version", VERSIONS)
def test_same_site_and_msms_global_manager_share_the_file_and_both_leave_it_as_it_was(version):
    stock = (FIXTURES / version / "context.xml").read_bytes()
    inv = parse_inventory((ROOT / "hosts.toml").read_text(), Path("/x/hosts.toml"))
    spec = msm.manager_spec(0, inv.tomcats, dataclasses.replace(inv.msm, scope="global"), "t")
    both = cookies.patch_context_cookies(msm.patch_context(stock, spec, "t"), "lax", "t")
    assert cookies.read_same_site(both, "t") == "lax" and msm.read_manager(both, "t") is not None
    # the order a deploy patches in (msm's Manager, then the CookieProcessor), and again: no change
    assert cookies.patch_context_cookies(msm.patch_context(both, spec, "t"), "lax", "t") == both
    assert cookies.patch_context_cookies(msm.patch_context(both, None, "t"), None, "t") == stock


def test_an_operators_own_cookie_processor_is_refused_with_a_setting_and_left_alone_without():
    theirs = b'<?xml version="1.0"?>\n<Context>\n    <CookieProcessor sameSiteCookies="none" />\n</Context>\n'
    with pytest.raises(TcsessionError, match=r"tomcat1:/etc/tomcat10/context.xml: has a <CookieProcessor> of your own"
                       ) as info:
        cookies.patch_context_cookies(theirs, "lax", "tomcat1:/etc/tomcat10/context.xml")
    assert "changed nothing" in str(info.value) and "\n" not in str(info.value)
    assert cookies.patch_context_cookies(theirs, None, "t") == theirs
    with pytest.raises(TcsessionError, match="expected <Context>"):
        cookies.patch_context_cookies(b"<Server/>", "lax", "t")
    with pytest.raises(TcsessionError, match="t"):
        cookies.patch_context_cookies(b"<Context>", "lax", "t")


def test_same_site_plans_the_context_file_inside_each_drained_restart_and_rollback_restores_it():
    p = planning.plan(shipped_with_app('same_site = "lax"'), captured("deployed"), "delta")
    restarts = [s for s in p.steps if type(s).__name__ == "RestartTomcat"]
    assert [s.host for s in restarts] == ["tomcat1", "tomcat2"] and all(s.drain for s in restarts)
    for s in restarts:
        (change,) = s.files
        assert change.path == "/etc/tomcat10/context.xml" and cookies.read_same_site(change.after, "t") == "lax"
        assert cookies.patch_context_cookies(change.after, None, "t") == change.before  # the stock file back


def with_tomcat(facts: dict, version: str) -> dict:
    return {n: dataclasses.replace(f, packages={**f.packages, "tomcat10": version}) if n.startswith("tomcat") else f
            for n, f in facts.items()}


@pytest.mark.parametrize("version,refused", [("9.0.20-1", True), ("8.5.41-1", True), ("8.5.42-1", False),
                                             ("9.0.21-1", False), ("10.1.60-1~deb12u1", False)])
def test_same_site_needs_a_tomcat_that_has_it(version, refused):
    inv = shipped_with_app('same_site = "lax"')
    facts = with_tomcat(captured("deployed"), version)
    if refused:
        with pytest.raises(TcsessionError, match=r"\[app\] same_site = 'lax': tomcat1 runs Tomcat .* cannot set "
                                                 r"SameSite \(8\.5\.42, 9\.0\.21 or newer can\)"):
            planning.plan(inv, facts, "delta")
    else:
        planning.plan(inv, facts, "delta")


def test_same_site_none_needs_tls_and_a_bad_value_is_one_line():
    with pytest.raises(TcsessionError, match=r'\[app\].*same_site = "none" needs \[tls\]'):
        shipped_with_app('same_site = "none"')
    with pytest.raises(TcsessionError, match=r'\[app\].*same_site.*"lax", "strict", "none" or "unset"') as info:
        shipped_with_app('same_site = "Lax"')
    assert "\n" not in str(info.value)


def test_the_clients_cookie_attributes_keep_their_values():
    assert cookie_attributes("JSESSIONID=A.tomcat1; Path=/; Secure; HttpOnly; SameSite=Lax") == (
        "path=/", "secure", "httponly", "samesite=lax")
    assert cookie_attributes("JSESSIONID=A; Path = /shop ;") == ("path=/shop",)


def test_apt_waits_for_a_dpkg_lock_held_by_the_hosts_own_timers():
    """A fresh host's apt-daily/unattended-upgrades (seen in the lab: "Unable to acquire the dpkg
    frontend lock" in a container's first minute) is waited for, in the install and in its retry
    after a lists update; yum and dnf wait for their lock by themselves."""
    script = shell.install_script("apt-get", ["tomcat10", "curl"])
    assert script.count(f"apt-get install -o DPkg::Lock::Timeout={shell.APT_LOCK_WAIT} ") == 2
    assert f"apt-get update -o DPkg::Lock::Timeout={shell.APT_LOCK_WAIT} " in script
    assert "Lock::Timeout" not in shell.install_script("dnf", ["tomcat"])
