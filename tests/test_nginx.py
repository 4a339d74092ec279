"""The nginx site: golden files, structure, validation, and `nginx -t` when a binary is at hand.

Regenerate the golden files after an intended change with
TCSESSION_UPDATE_GOLDEN=1 pytest tests/test_nginx.py (then review the diff).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tcsession.errors import TcsessionError
from tcsession.nginx import HEADER, Backend, render_site, upstream_name

GOLDEN = Path(__file__).parent / "golden" / "nginx"

B1 = Backend("tomcat1", "10.153.0.112", 8080, "tomcat1")
B2 = Backend("tomcat2", "10.153.0.113", 8080, "tomcat2")
B3 = Backend("tomcat3", "10.153.0.114", 8080, "tomcat3")
TWO = [B1, B2]
THREE = [B1, B2, B3]

CASES = {
    "jvmroute-2.conf": (TWO, "jvmroute"),
    "jvmroute-3.conf": (THREE, "jvmroute"),
    "roundrobin-2.conf": (TWO, "roundrobin"),
    "roundrobin-3.conf": (THREE, "roundrobin"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    backends, routing = CASES[name]
    text = render_site(backends, routing=routing)
    path = GOLDEN / name
    if os.environ.get("TCSESSION_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()
    assert render_site(list(backends), routing=routing) == text  # deterministic


# ------------------------------------------------------------------------------ structure

def blocks(text: str, kind: str) -> dict[str, list[str]]:
    """{name: [directive lines]} of every `<kind> <name> {` block (no nesting inside)."""
    found = {}
    for m in re.finditer(rf"^{kind} (\S+)(?: (\S+))? \{{\n(.*?)^\}}", text, re.M | re.S):
        name = m.group(1) if kind == "upstream" else m.group(2)
        lines = [line.split("#")[0].strip() for line in m.group(3).splitlines()]
        found[name] = [line for line in lines if line]
    return found


def servers(lines: list[str]) -> list[tuple[str, bool]]:
    out = []
    for line in lines:
        assert line.startswith("server ") and line.endswith(";"), line
        words = line[:-1].split()
        assert "max_fails=1" in words and "fail_timeout=5s" in words
        out.append((words[1], "backup" in words))
    return out


@pytest.mark.parametrize("backends", [TWO, THREE], ids=["2", "3"])
def test_jvmroute_structure(backends):
    text = render_site(backends)
    assert text.splitlines()[0] == HEADER
    assert text.endswith("}\n")
    assert text.count("{") == text.count("}")
    [mapping] = blocks(text, "map").values()
    assert re.search(r"^map \$cookie_jsessionid \$tcsession_backend \{$", text, re.M)
    assert mapping[0] == "default     tcs_all;"
    routes = [line.split() for line in mapping[1:]]
    assert routes == [[f"~\\.{b.jvm_route}$", f"tcs_route_{b.jvm_route};"] for b in backends]

    ups = blocks(text, "upstream")
    assert list(ups) == [upstream_name(b.jvm_route) for b in backends] + ["tcs_all"]
    for b in backends:
        members = servers(ups[upstream_name(b.jvm_route)])
        assert members[0] == (f"{b.address}:{b.port}", False)
        assert sorted(members[1:]) == sorted((f"{o.address}:{o.port}", True) for o in backends if o is not b)
    assert servers(ups["tcs_all"]) == [(f"{b.address}:{b.port}", False) for b in backends]
    assert "proxy_pass http://$tcsession_backend;" in text
    common_server_checks(text)


@pytest.mark.parametrize("backends", [TWO, THREE], ids=["2", "3"])
def test_roundrobin_structure(backends):
    text = render_site(backends, routing="roundrobin")
    assert text.splitlines()[0] == HEADER
    assert "map " not in text and "$cookie" not in text
    ups = blocks(text, "upstream")
    assert list(ups) == ["tcs_all"]
    assert servers(ups["tcs_all"]) == [(f"{b.address}:{b.port}", False) for b in backends]
    assert "proxy_pass http://tcs_all;" in text
    common_server_checks(text)


def common_server_checks(text: str) -> None:
    server = text[text.index("\nserver {"):]
    for directive in [
        "listen 80 default_server;",
        "server_tokens off;",
        "location / {",
        "proxy_http_version 1.1;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_connect_timeout 2s;",
        "proxy_next_upstream error timeout http_502 http_503;",
    ]:
        assert re.search(rf"^\s*{re.escape(directive)}$", server, re.M), directive
    for absent in ("sticky", "resolver", "ip_hash", "listen [::]"):
        assert not re.search(rf"^\s*{re.escape(absent)}", text, re.M), absent


def test_listen_port_ipv6_and_host_header():
    text = render_site(TWO, listen_port=8000, listen_ipv6=True)
    assert "    listen 8000 default_server;\n    listen [::]:8000 default_server;\n" in text
    assert "proxy_set_header Host $host:$server_port;" in text


def test_ipv6_and_hostname_backends():
    text = render_site([Backend("a", "fd00::0:1", 8080, "a"), Backend("b", "tomcat-b.example", 8081, "b")])
    assert "server [fd00::1]:8080 max_fails=1 fail_timeout=5s;  # a" in text
    assert "server tomcat-b.example:8081 max_fails=1 fail_timeout=5s backup;  # a" not in text
    assert "server tomcat-b.example:8081 max_fails=1 fail_timeout=5s backup;  # b" in text


def test_backend_order_is_kept_and_route_names_are_free():
    backends = [Backend("z", "10.0.0.2", 8080, "Route_Z-2"), Backend("a", "10.0.0.1", 8080, "all")]
    text = render_site(backends)
    assert text.index("~\\.Route_Z-2$") < text.index("~\\.all$")
    assert "upstream tcs_route_all {" in text and "upstream tcs_all {" in text  # no clash


def test_roundrobin_needs_no_jvm_route():
    text = render_site([Backend("a", "10.0.0.1", 8080), Backend("b", "10.0.0.2", 8080)], routing="roundrobin")
    assert "upstream tcs_all {" in text


@pytest.mark.parametrize("backends, kwargs, message", [
    ([], {}, r"no Tomcat backends"),
    (TWO, {"routing": "sticky"}, r"routing 'sticky' is not one of jvmroute, roundrobin"),
    (TWO, {"listen_port": 0}, r"listen port 0 is not 1-65535"),
    (TWO, {"listen_port": "80"}, r"listen port '80' is not 1-65535"),
    ([B1, Backend("t2", "10.0.0.2", 8080)], {}, r"backend 't2' has no jvm_route"),
    ([B1, Backend("t2", "10.0.0.2", 8080, "tomcat 2")], {}, r"jvm_route 'tomcat 2' must be"),
    ([B1, Backend("t2", "10.0.0.2", 8080, "a.b")], {}, r"jvm_route 'a\.b' must be"),
    ([B1, Backend("t2", "10.0.0.2", 8080, "TOMCAT1")], {},
     r"backend 't2' jvm_route 'TOMCAT1' is already used by backend 'tomcat1'"),
    ([B1, Backend("tomcat1", "10.0.0.2", 8080, "x")], {}, r"backend name 'tomcat1' appears twice"),
    ([B1, Backend("t2", "10.153.0.112", 8080, "x")], {}, r"backends 'tomcat1' and 't2' are both 10\.153\.0\.112:8080"),
    ([B1, Backend("t2", "10.0.0.2;", 8080, "x")], {}, r"address '10\.0\.0\.2;' is not an IP address or host name"),
    ([B1, Backend("t2", "", 8080, "x")], {}, r"address '' is not"),
    ([B1, Backend("t2", "10.0.0.2", 70000, "x")], {}, r"backend 't2' port 70000 is not 1-65535"),
    ([B1, Backend("t 2", "10.0.0.2", 8080, "x")], {}, r"backend name 't 2' must be"),
])
def test_validation_errors(backends, kwargs, message):
    with pytest.raises(TcsessionError, match=r"^nginx site: (.*)?" + message) as info:
        render_site(backends, **kwargs)
    assert "\n" not in str(info.value)


# -------------------------------------------------------------------- nginx -t, if available

def nginx_binary() -> str | None:
    for candidate in (os.environ.get("TCSESSION_NGINX"), "/tmp/nginxdl/root/usr/sbin/nginx",
                      shutil.which("nginx")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_nginx_accepts_the_site(name, tmp_path):
    """`nginx -t` on the site inside a minimal http{} with every path under tmp_path."""
    binary = nginx_binary()
    if binary is None:
        assert not os.environ.get("TCSESSION_NGINX"), "TCSESSION_NGINX is set but not executable"
        pytest.skip("no nginx binary (set TCSESSION_NGINX, or extract Debian's nginx package to /tmp/nginxdl/root)")
    backends, routing = CASES[name]
    site = tmp_path / "tcsession.conf"
    site.write_text(render_site(backends, routing=routing, listen_port=free_port()))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""\
pid {tmp_path}/nginx.pid;
error_log stderr;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {site};
}}
""")
    result = subprocess.run([binary, "-t", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


# -------------------------------------------------------------------- drain (rolling restarts)

def test_drain_marks_one_node_down_in_every_upstream_and_nothing_else():
    from tcsession.nginx import drain

    site = (GOLDEN / "jvmroute-3.conf").read_text()
    drained = drain(site, "10.153.0.113", 8080)
    changed = [(a, b) for a, b in zip(site.splitlines(), drained.splitlines()) if a != b]
    assert len(site.splitlines()) == len(drained.splitlines())
    assert len(changed) == 4  # its own upstream, the two others' backup lists, round robin
    for before, after in changed:
        assert "10.153.0.113:8080" in before and after.split("#")[0].rstrip().endswith(" down;")
    assert drain(drained, "10.153.0.113", 8080) == drained  # twice is once


def test_drain_of_an_unknown_node_is_an_error():
    from tcsession.nginx import drain

    with pytest.raises(TcsessionError, match="no server 10.9.9.9:8080"):
        drain((GOLDEN / "roundrobin-2.conf").read_text(), "10.9.9.9", 8080)


@pytest.mark.parametrize("name", ["jvmroute-3.conf", "roundrobin-2.conf"])
def test_nginx_accepts_a_drained_site(name, tmp_path):
    from tcsession.nginx import drain

    binary = nginx_binary()
    if binary is None:
        assert not os.environ.get("TCSESSION_NGINX"), "TCSESSION_NGINX is set but not executable"
        pytest.skip("no nginx binary (set TCSESSION_NGINX)")
    site_text = (GOLDEN / name).read_text()
    address = re.search(r"server (\d+\.\d+\.\d+\.\d+):(\d+)", site_text)
    site = tmp_path / "tcsession.conf"
    site.write_text(drain(site_text, address.group(1), int(address.group(2)))
                    .replace("listen 80 ", f"listen {free_port()} "))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n access_log off;\n client_body_temp_path {tmp_path}/b;\n proxy_temp_path {tmp_path}/p;\n"
                    f" fastcgi_temp_path {tmp_path}/f;\n uwsgi_temp_path {tmp_path}/u;\n scgi_temp_path {tmp_path}/s;\n"
                    f" include {site};\n}}\n")
    proc = subprocess.run([binary, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
