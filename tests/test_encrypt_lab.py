"""[delta] encrypt = true on real hosts (bookworm, Tomcat 10.1.60): the key is generated beside
the inventory (root only, never in it), the encrypted cluster replicates and fails over, a node
with a wrong key does not get the sessions and status says why, and a deploy puts the key back;
a capture on the lab bridge sees the session in clear without encryption and never with it."""

from __future__ import annotations

import stat
import time

import pytest

from capture import Capture
from conftest import assert_fails_over, new_lab
from conftest import host_state as checked_state
from tcsession import status
from tcsession.client import SessionClient, parse_session_id
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Fresh hosts of its own: encryption is on from the first deploy, and turning it on or off
    on a running cluster is refused (the shared cluster cannot take it)."""
    yield from new_lab(tmp_path_factory, "tcsh10d", "10.153.33.0/24", extra="\n[delta]\nencrypt = true\n",
                       deploy_mode="delta")


def test_the_key_is_beside_the_inventory_and_in_server_xml(lab):
    key_file = lab.inv_path.with_name("hosts.cluster-key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) == 64 and key not in lab.inv_path.read_text()
    for t in ("tomcat1", "tomcat2"):
        assert lab.check(t, "grep -c 'encryptionKey=\"%s\"' /etc/tomcat10/server.xml" % key).strip() == "1"


def test_the_encrypted_cluster_replicates_and_fails_over(lab):
    report = status.cluster_report(lab.inv, session_requests=5)
    assert report.healthy, [(h.name, h.problems) for h in report.hosts]
    assert_fails_over(lab, lab.inv, before=20)


def test_a_wrong_key_does_not_join_and_status_says_why(lab):
    wrong = "ff" * 32
    lab.check("tomcat2", f"sed -i 's/encryptionKey=\"[0-9a-f]*\"/encryptionKey=\"{wrong}\"/' /etc/tomcat10/server.xml"
              " && systemctl restart tomcat10")
    deadline = time.monotonic() + 150
    while True:
        report = status.cluster_report(lab.inv, session_requests=0)
        problems = [p for h in report.hosts for p in h.problems]
        if any(p.startswith("cluster encryption:") for p in problems) or time.monotonic() > deadline:
            break
        time.sleep(1)
    print("\nwrong key:", problems)
    assert any(p.startswith("cluster encryption:") and "could not decrypt" in p for p in problems), problems
    assert deploy(lab.inv, "delta", quiet=True).changed  # the right key back, tomcat2 restarted
    out = lab.check("tomcat1", "set -o pipefail; journalctl -u tomcat10 --no-pager -o cat | { grep -c 'Failed to decrypt' || true; }")
    print("decrypt failures logged on tomcat1:", out.strip())
    # Measured: the node that rejoined with the right key logs "Failed to decrypt message: replay
    # attack detected" for a few messages (0 to 6 in the runs so far), which status reports; the
    # session replication itself works again:
    report = status.cluster_report(lab.inv, session_requests=5)
    print("after the key was put back:", [(h.name, h.problems) for h in report.hosts])
    assert report.session.ok and all(p.startswith("cluster encryption:") and "replay" in p
                                     for h in report.hosts for p in h.problems), report.session.to_dict()
    assert_fails_over(lab, lab.inv)


def captured_while_serving(lab, inv) -> tuple[bytes, str, int]:
    """The receiver port's traffic on the lab bridge while 10 requests change one session: (the
    payloads, the session's base id, frames seen)."""
    client = SessionClient(inv.nginx.address, inv.nginx.http_port)
    with Capture(lab.spec.bridge, inv.delta.receiver_port, seconds=60) as cap:
        for _ in range(10):
            client.request()
        time.sleep(1.5)  # the last delta crosses the bridge (channelSendOptions: asynchronous)
    assert client.run.ok and client.run.last_count == 10, client.run.to_dict()
    return cap.data, parse_session_id(client.run.session_ids[-1]).base, cap.frames


def test_a_capture_on_the_bridge_shows_sessions_in_clear_only_without_encryption(lab):
    """What an eavesdropper on the cluster network sees: without encrypt, the session's id and
    its attribute's name cross the bridge in clear (DeltaManager's messages are Java-serialized);
    with it, neither does, though the replication traffic is there."""
    data, base, frames = captured_while_serving(lab, lab.inv)
    print(f"\nencrypted: {frames} frames, {len(data)} bytes on port {lab.inv.delta.receiver_port}")
    assert frames > 0 and len(data) > 1000  # the replication was captured...
    assert base.encode() not in data and b"count" not in data  # ...and shows nothing in clear
    clear = lab.inv_path.with_name("clear.toml")
    clear.write_text(lab.inv_path.read_text().replace("encrypt = true", "encrypt = false"))
    inv = load_inventory(clear)
    before = {t: host_state(lab, t) for t in ("tomcat1", "tomcat2")}
    # turning encryption off while both run would lose their sessions: refused, nothing changed
    with pytest.raises(TcsessionError, match=r"turning \[delta\] encrypt off while tomcat1, tomcat2 run"):
        deploy(inv, "delta", quiet=True)
    assert before == {t: host_state(lab, t) for t in before}
    stop_tomcats(lab)  # the maintenance window the refusal asks for
    try:
        assert deploy(inv, "delta", quiet=True).changed
        data, base, frames = captured_while_serving(lab, inv)
        print(f"clear: {frames} frames, {len(data)} bytes")
        assert base.encode() in data and b"count" in data
    finally:
        stop_tomcats(lab)
        assert deploy(lab.inv, "delta", quiet=True).changed  # encrypted again


def host_state(lab, host: str) -> str:
    """What a refusal must leave as it was: server.xml's checksum, Tomcat's PID, the packages."""
    return checked_state(lab, host, files=("/etc/tomcat10/server.xml",), units=("tomcat10",))


def stop_tomcats(lab) -> None:
    for t in ("tomcat1", "tomcat2"):
        lab.check(t, "systemctl stop tomcat10")
