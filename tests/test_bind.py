"""Bound to the private address: server.xml's HTTP Connector on the node's own address, the
shutdown port off or on loopback, no AJP added; status flags a cluster port on a wildcard
address. Real inputs: Apache's stock server.xml of 7.0 to 11.0, Debian's, captured facts."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import pytest

from conftest import FIXTURES
from tcsession import status
from tcsession.errors import TcsessionError
from tcsession.facts import parse_facts
from tcsession.inventory import load_inventory
from tcsession.probes import parse_ss
from tcsession.serverxml import patch_listeners
from tcsession.xmlpatch import XmlDocument, element_children

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
FILES = sorted(FIXTURES.glob("*/server.xml")) + sorted(DATA.glob("debian-*/server.xml"))


def changed_lines(before: bytes, after: bytes) -> list[str]:
    return [l for l in difflib.unified_diff(before.decode().splitlines(), after.decode().splitlines(), n=0, lineterm="")
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]


def live_connectors(data: bytes):
    root = XmlDocument(data, "t").root
    return root, [c for s in element_children(root, "Service") for c in element_children(s, "Connector")]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.parent.name)
def test_the_http_connector_is_bound_and_nothing_else_changes(path):
    before = path.read_bytes()
    after = patch_listeners(before, "10.153.0.112", 8080, str(path))
    root, connectors = live_connectors(after)
    assert [c.get("address") for c in connectors if c.get("port") == "8080"] == ["10.153.0.112"]
    assert after.count(b"AJP/1.3") == before.count(b"AJP/1.3")  # none added (7.0.76 has a live one)
    assert root.get("port") == "-1" or root.get("address") == "127.0.0.1"
    # the Connector's line (and the Server's, when its port is open) and nothing else
    changes = changed_lines(before, after)
    assert len(changes) == (2 if b'<Server port="-1"' in before else 4), changes
    assert patch_listeners(after, "10.153.0.112", 8080, str(path)) == after  # idempotent
    # another address replaces it in place
    again = patch_listeners(after, "10.153.0.113", 8080, str(path))
    assert len(changed_lines(after, again)) == 2


def test_an_operators_ajp_connector_is_kept_and_a_wildcard_shutdown_moves_to_loopback():
    stock = (FIXTURES / "9.0.121" / "server.xml").read_bytes()
    mine = stock.replace(b'<Server port="8005" shutdown="SHUTDOWN">',
                         b'<Server port="8005" address="0.0.0.0" shutdown="SHUTDOWN">')
    mine = mine.replace(b"    <!-- Define an AJP 1.3 Connector on port 8009 -->",
                        b'    <Connector protocol="AJP/1.3" port="8009" secretRequired="false" />')
    assert mine.count(b"AJP/1.3") == stock.count(b"AJP/1.3") + 1
    after = patch_listeners(mine, "10.153.0.112", 8080, "t")
    root, connectors = live_connectors(after)
    assert root.get("address") == "127.0.0.1"
    ajp = [c for c in connectors if c.get("protocol") == "AJP/1.3"]
    assert len(ajp) == 1 and ajp[0].get("address") is None  # the operator's, untouched
    assert b'<Connector protocol="AJP/1.3" port="8009" secretRequired="false" />' in after


def test_no_http_connector_on_the_port_is_one_line_naming_the_file():
    stock = (DATA / "debian-bookworm-tomcat10" / "server.xml").read_bytes()
    with pytest.raises(TcsessionError) as e:
        patch_listeners(stock, "10.153.0.112", 8081, "tomcat1:/etc/tomcat10/server.xml")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("tomcat1:/etc/tomcat10/server.xml: ")
    assert 'Connector port="8081"' in msg and "http_port" in msg


def facts(name: str):
    return parse_facts((DATA / "facts" / f"bookworm-delta-{name}.txt").read_text())


def test_status_flags_the_captured_wildcard_http_port():
    inv = load_inventory(ROOT / "hosts.toml")
    f = parse_facts((DATA / "facts" / "prebind-delta-tomcat1.txt").read_text())  # captured before this change: Tomcat on 0.0.0.0:8080
    st = status.judge_tomcat(inv, inv.host("tomcat1"), f, "delta")
    assert st.problems == ["cluster ports on own address: listening on a wildcard address: HTTP 0.0.0.0:8080; "
                           "run tcsession deploy to bind them to 10.153.0.112"]


def test_status_flags_receiver_and_memcached_on_wildcards_and_passes_own_addresses():
    inv = load_inventory(ROOT / "hosts.toml")
    host = inv.host("tomcat1")
    wild = parse_ss("LISTEN 0 50 *:4000 *:*\nLISTEN 0 1024 0.0.0.0:11211 0.0.0.0:*\n"
                    "LISTEN 0 100 [::]:8080 [::]:*\n", "tcp")
    [(what, ok, detail)] = status.judge_wildcards(inv, host, wild)
    assert not ok and "cluster receiver *:4000" in detail and "memcached 0.0.0.0:11211" in detail
    assert "HTTP :::8080" in detail or "HTTP [::]:8080" in detail
    own = parse_ss("LISTEN 0 100 10.153.0.112:8080 0.0.0.0:*\nLISTEN 0 50 10.153.0.112:4000 0.0.0.0:*\n"
                   "LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\nLISTEN 0 1 127.0.0.1:8005 0.0.0.0:*\n", "tcp")
    assert status.judge_wildcards(inv, host, own) == [("cluster ports on own address", True,
                                                        "none on a wildcard address")]
    f = dataclasses.replace(facts("tomcat1"), listeners=own + parse_ss("UNCONN 0 0 228.0.0.4:45564 0.0.0.0:*", "udp"))
    assert status.judge_tomcat(inv, host, f, "delta").problems == []
