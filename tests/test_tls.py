"""[tls]: the certificate and key checked on this machine before any change (with a CA the tests
make, tests/tlsca.py), the site nginx serves (golden, `nginx -t` with real certificates), the
RemoteIpValve in every stock server.xml, and the key never shown."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tcsession import nginx, serverxml, tls
from tcsession.errors import TcsessionError
from tcsession.steps import FileChange
from tlsca import CA

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "tomcat"
GOLDEN = Path(__file__).parent / "golden" / "nginx"


@pytest.fixture(scope="module")
def ca():
    return CA()


def check(cert, key, name="shop.example.com"):
    tls.check_pair(cert, key, name, "hosts.toml: [tls]", "cert.pem", "key.pem")


def test_a_good_pair_passes_and_wildcards_match_one_label(ca):
    cert, key = ca.issue("shop.example.com", "*.example.org")
    check(cert, key)
    check(cert, key, "a.example.org")
    with pytest.raises(TcsessionError, match="does not cover server_name 'a.b.example.org'"):
        check(cert, key, "a.b.example.org")


@pytest.mark.parametrize("case, message", [
    ("other key", r"^hosts.toml: \[tls\] key key.pem does not match the certificate cert.pem"),
    ("expired", r"^hosts.toml: \[tls\] certificate cert.pem expired on \d{4}-\d\d-\d\d \d\d:\d\d UTC; renew it$"),
    ("not yet", r"^hosts.toml: \[tls\] certificate cert.pem is not valid before"),
    ("other name", r"does not cover server_name 'shop.example.com' \(it names www.example.net\)"),
    ("chain out of order", r"certificate 2 in the file is not the issuer of certificate 1; put the chain in order"),
    ("encrypted key", r"key key.pem is encrypted; nginx would ask for its passphrase"),
    ("certificate as key", r"key key.pem is a certificate, not a private key"),
    ("no certificate", r"certificate cert.pem: no PEM certificate in it"),
])
def test_a_bad_pair_is_one_line_naming_the_file_and_the_fix(ca, case, message):
    from tlsca import key_pem
    from cryptography.hazmat.primitives import serialization

    cert, key = ca.issue("shop.example.com")
    if case == "other key":
        key = ca.issue("shop.example.com")[1]
    elif case == "expired":
        cert, key = ca.issue("shop.example.com", days=10, start_days=-20)
    elif case == "not yet":
        cert, key = ca.issue("shop.example.com", days=10, start_days=2)
    elif case == "other name":
        cert, key = ca.issue("www.example.net")
    elif case == "chain out of order":  # the leaf, then the root instead of its issuer, then the intermediate
        leaf, _, mid = cert.partition(b"-----END CERTIFICATE-----\n")
        cert = leaf + b"-----END CERTIFICATE-----\n" + ca.root_pem + mid
    elif case == "encrypted key":
        k = serialization.load_pem_private_key(key, None)
        key = key_pem(k, b"secret")
    elif case == "certificate as key":
        key = cert
    elif case == "no certificate":
        cert = b"not a certificate\n"
    with pytest.raises(TcsessionError) as e:
        check(cert, key)
    import re
    assert re.search(message, str(e.value)), str(e.value)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- the site


SITE = nginx.TlsSite("shop.example.com", 443, True, 31536000)
B = [nginx.Backend("tomcat1", "10.153.0.112", 8080, "tomcat1"), nginx.Backend("tomcat2", "10.153.0.113", 8080, "tomcat2")]


def test_the_https_site_golden():
    got = nginx.render_site(B, tls=SITE)
    path = GOLDEN / "tls-jvmroute-2.conf"
    if os.environ.get("TCSESSION_UPDATE_GOLDEN"):
        path.write_text(got)
    assert got == path.read_text()
    assert "return 301 https://$host$request_uri;" in got and "listen 443 ssl http2 default_server;" in got
    assert 'add_header Strict-Transport-Security "max-age=31536000" always;' in got
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in got
    plain = nginx.render_site(B, tls=nginx.TlsSite("shop.example.com", 8443, False, 0))
    assert "return 301" not in plain and "Strict-Transport-Security" not in plain
    assert plain.count("proxy_pass") == 2 and "listen 8443 ssl http2" in plain
    assert nginx.servers(got) == nginx.servers(nginx.render_site(B))  # the drains see the same backends


def test_nginx_loads_the_https_site_with_a_real_certificate(ca, tmp_path):
    from test_nginx import free_port, nginx_binary

    binary = nginx_binary()
    if binary is None:
        assert not os.environ.get("TCSESSION_NGINX"), "TCSESSION_NGINX is set but not executable"
        pytest.skip("no nginx binary (set TCSESSION_NGINX)")
    cert, key = ca.issue("shop.example.com")
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    site = nginx.render_site(B, listen_port=free_port(), tls=nginx.TlsSite("shop.example.com", free_port(), True, 0))
    site = site.replace(nginx.TLS_CERT, str(tmp_path / "tls.crt")).replace(nginx.TLS_KEY, str(tmp_path / "tls.key"))
    (tmp_path / "tcsession.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n    access_log off;\n"
                    + "".join(f"    {t}_temp_path {tmp_path}/{t};\n" for t in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
                    + f"    include {tmp_path / 'tcsession.conf'};\n}}\n")
    r = subprocess.run([binary, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "test is successful" in r.stderr, r.stderr


# --------------------------------------------------------------------------- Tomcat and the key


@pytest.mark.parametrize("version", ["7.0.76", "8.5.100", "9.0.121", "10.1.59", "11.0.25"])
def test_the_remote_ip_valve_trusts_only_nginx_and_goes_back_out_byte_for_byte(version):
    stock = (FIXTURES / version / "server.xml").read_bytes()
    patched = serverxml.patch_remote_ip(stock, "10.153.0.111", "t")
    assert b'<Valve className="org.apache.catalina.valves.RemoteIpValve" internalProxies="10\\.153\\.0\\.111" ' \
           b'remoteIpHeader="X-Forwarded-For" protocolHeader="X-Forwarded-Proto" protocolHeaderHttpsValue="https" />' \
           in patched
    added = [l for l in patched.decode().splitlines() if l not in stock.decode().splitlines()]
    assert len(added) == 2  # the marker and the valve, nothing else changed
    assert serverxml.patch_remote_ip(patched, "10.153.0.111", "t") == patched
    assert serverxml.patch_remote_ip(patched, None, "t") == stock
    moved = serverxml.patch_remote_ip(patched, "10.153.0.99", "t")
    assert b'internalProxies="10\\.153\\.0\\.99"' in moved and moved.count(b"RemoteIpValve") == 2  # marker + valve
    with_cluster = serverxml.patch_server_xml(patched, serverxml.ClusterSpec(
        tomcat_major=int(version.split(".")[0]), address="10.153.0.112", jvm_route="tomcat1"), "t") \
        if int(version.split(".")[0]) >= 8 else None
    if with_cluster is not None:
        assert serverxml.patch_remote_ip(with_cluster, "10.153.0.111", "t") == with_cluster


def test_the_private_key_is_never_shown_in_a_diff(ca):
    _, key = ca.issue("shop.example.com")
    for change in (FileChange(nginx.TLS_KEY, None, key, "600", "root:root"),
                   FileChange(nginx.TLS_KEY, key, ca.issue("shop.example.com")[1], "600", "root:root")):
        text = change.diff()
        assert "PRIVATE" not in text and key.decode()[40:80] not in text and "not shown" in text


def test_status_judges_the_certificate_nginx_serves(ca):
    import datetime

    from tcsession.status import judge_certificate

    cert, _ = ca.issue("shop.example.com", days=90)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert judge_certificate(cert, now) == ("certificate", True, "88 days left")  # issued a day ago, for 90
    soon = judge_certificate(cert, now + datetime.timedelta(days=80))
    assert soon[1] and "renew it soon (under 21)" in soon[2]
    late = judge_certificate(cert, now + datetime.timedelta(days=95))
    assert not late[1] and late[2].startswith("expired ") and "run tcsession deploy" in late[2]
    assert judge_certificate(None) == ("certificate", False, f"{nginx.TLS_CERT} missing; run tcsession deploy")


def test_a_session_cookie_without_secure_over_https_is_a_status_problem():
    from tcsession.client import SessionRun

    run = SessionRun(requests=3, cookie="X", cookie_attributes=("path", "httponly"))
    assert run.ok
    run.problems.append("the session cookie lacks Secure over HTTPS")
    assert not run.ok and run.to_dict()["problems"] == ["the session cookie lacks Secure over HTTPS"]


def test_preflight_judges_the_pair_on_this_machine(ca, tmp_path):
    from tcsession.inventory import parse_inventory
    from tcsession.preflight import judge_tls

    cert, key = ca.issue("shop.example.com")
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(ca.issue("shop.example.com")[1])  # another key
    text = (ROOT / "hosts.toml").read_text() + '\n[tls]\ncertificate = "c.pem"\nkey = "k.pem"\nserver_name = "shop.example.com"\n'
    inv = parse_inventory(text, tmp_path / "hosts.toml")
    what, ok, detail = judge_tls(inv)
    assert not ok and "does not match the certificate" in detail
    (tmp_path / "k.pem").write_bytes(key)
    what, ok, detail = judge_tls(inv)
    assert ok and detail == "c.pem covers shop.example.com, 88 days left, key matches"
