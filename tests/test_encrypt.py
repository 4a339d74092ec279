"""[delta] encrypt = true: the key file, the EncryptInterceptor in the Cluster (explicit
algorithm, upstream of TcpFailureDetector), the versions refused, the key never in a diff.
Real inputs: Apache's stock server.xml, the deployed captures, the package versions in the
lab's apt caches (bookworm tomcat10 10.1.60-1~deb12u1, bullseye tomcat9 9.0.118-0+deb11u1)."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from conftest import FIXTURES
from tcsession import clusterkey, serverxml
from tcsession import plan as planning
from tcsession.errors import TcsessionError
from tcsession.facts import parse_facts
from tcsession.inventory import parse_inventory
from tcsession.xmlpatch import XmlDocument

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def spec(major=10, key=KEY):
    return serverxml.ClusterSpec(tomcat_major=major, address="10.153.0.112", jvm_route="tomcat1", encrypt_key=key)


def interceptors(data: bytes) -> list:
    root = XmlDocument(data, "t").root
    return [(i.get("className").rsplit(".", 1)[1], dict(i.attrib)) for i in root.iter("Interceptor")]


@pytest.mark.parametrize("version", ["9.0.121", "10.1.59", "11.0.25"])
def test_the_interceptor_sits_before_the_failure_detector_with_its_algorithm(version):
    stock = (FIXTURES / version / "server.xml").read_bytes()
    out = serverxml.patch_server_xml(stock, spec(int(version.split(".")[0])), "t")
    names = [n for n, _ in interceptors(out)]
    assert names == ["EncryptInterceptor", "TcpFailureDetector", "MessageDispatchInterceptor"]
    attrs = interceptors(out)[0][1]
    assert attrs["encryptionAlgorithm"] == "AES/GCM/NoPadding" and attrs["encryptionKey"] == KEY
    assert serverxml.patch_server_xml(out, spec(int(version.split(".")[0])), "t") == out
    plain = serverxml.patch_server_xml(out, dataclasses.replace(spec(), encrypt_key="",
                                                               tomcat_major=int(version.split(".")[0])), "t")
    assert b"EncryptInterceptor" not in plain


def test_old_tomcats_and_bad_keys_are_refused():
    stock = (FIXTURES / "8.5.100" / "server.xml").read_bytes()
    with pytest.raises(TcsessionError, match="needs Tomcat 9.0.14 or newer"):
        serverxml.patch_server_xml(stock, spec(8), "t")
    with pytest.raises(TcsessionError, match="not 32, 48 or 64 hex"):
        serverxml.patch_server_xml((FIXTURES / "10.1.59" / "server.xml").read_bytes(), spec(10, "zz" * 32), "t")


def test_the_key_file_is_generated_root_only_and_kept(tmp_path):
    path = tmp_path / "hosts.cluster-key"
    key = clusterkey.key_for(path)
    assert len(key) == 64 and int(key, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert clusterkey.key_for(path) == key  # never regenerated
    os.chmod(path, 0o640)
    with pytest.raises(TcsessionError, match="readable by group or others; chmod 600"):
        clusterkey.key_for(path)
    os.chmod(path, 0o600)
    path.write_text("not a key\n")
    with pytest.raises(TcsessionError, match="not a cluster key"):
        clusterkey.key_for(path)


def encrypting(extra: str = ""):
    text = (ROOT / "hosts.toml").read_text().replace("state_transfer_timeout = 60 ",
                                                     "state_transfer_timeout = 60\nencrypt = true " + extra)
    return parse_inventory(text, ROOT / "hosts.toml")


@pytest.fixture
def deployed():
    return {n: parse_facts((DATA / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def stopped(f):
    """The same host's facts with its Tomcat stopped."""
    return dataclasses.replace(f, active={**f.active, f.tomcat.unit: "inactive"})


def test_the_plan_adds_the_interceptor_and_never_shows_the_key(deployed):
    inv = encrypting()
    assert inv.delta.encrypt and inv.delta.key_file == str(ROOT / "hosts.cluster-key")
    # the captured cluster runs in clear: turning encryption on while it runs is refused...
    with pytest.raises(TcsessionError, match=r"turning \[delta\] encrypt on while tomcat1, tomcat2 run would lose"):
        planning.plan(inv, deployed, "delta", key=KEY)
    # ...as long as two of its members run (one running member alone has nobody to disagree with)
    assert planning.plan(inv, {**deployed, "tomcat2": stopped(deployed["tomcat2"])}, "delta", key=KEY).restarts("tomcat1")
    deployed = {n: stopped(f) if n != "nginx" else f for n, f in deployed.items()}
    p = planning.plan(inv, deployed, "delta", key=KEY)
    for t in ("tomcat1", "tomcat2"):
        (change,) = p.files(t)
        assert KEY.encode() in change.after and KEY not in change.diff()
        assert 'encryptionKey="(the cluster key)"' in change.diff()
        assert p.restarts(t)
    with pytest.raises(TcsessionError, match="no cluster key was read"):
        planning.plan(inv, deployed, "delta")


def encrypted_with(f, key: str | None):
    """The host's facts with its server.xml patched to `key` (None: no EncryptInterceptor)."""
    layout = f.tomcat
    fact = f.files[layout.server_xml]
    data = serverxml.patch_server_xml(fact.content, dataclasses.replace(spec(), encrypt_key=key or ""), "t")
    return dataclasses.replace(f, files={**f.files, layout.server_xml: dataclasses.replace(fact, content=data)})


def test_a_rolling_key_change_is_refused_unless_a_running_member_has_the_new_key(deployed):
    inv = encrypting()
    assert serverxml.read_cluster(encrypted_with(deployed["tomcat1"], KEY).files["/etc/tomcat10/server.xml"].content,
                                  "t")["encryption_key"] == KEY
    assert serverxml.read_cluster(deployed["tomcat1"].files["/etc/tomcat10/server.xml"].content, "t")["encryption_key"] is None
    other = "ab" * 32
    both_old = {**deployed, "tomcat1": encrypted_with(deployed["tomcat1"], other),
                "tomcat2": encrypted_with(deployed["tomcat2"], other)}
    with pytest.raises(TcsessionError, match="changing the cluster key while tomcat1, tomcat2 run"):
        planning.plan(inv, both_old, "delta", key=KEY)
    # tomcat2 given a wrong key by hand, tomcat1 on the right one: the rolling restart heals it
    healing = {**deployed, "tomcat1": encrypted_with(deployed["tomcat1"], KEY),
               "tomcat2": encrypted_with(deployed["tomcat2"], other)}
    p = planning.plan(inv, healing, "delta", key=KEY)
    assert p.restarts("tomcat2")
    # and turning it off on a running encrypted cluster
    clear = parse_inventory((ROOT / "hosts.toml").read_text(), ROOT / "hosts.toml")
    on = {**deployed, "tomcat1": encrypted_with(deployed["tomcat1"], KEY), "tomcat2": encrypted_with(deployed["tomcat2"], KEY)}
    with pytest.raises(TcsessionError, match=r"turning \[delta\] encrypt off"):
        planning.plan(clear, on, "delta")


def with_version(f, version: str):
    return dataclasses.replace(f, packages={**f.packages, f.tomcat.package: version})


def test_versions_without_gcm_or_on_both_sides_of_replay_protection_are_refused(deployed):
    inv = encrypting()
    assert planning.tomcat_version(deployed["tomcat1"]) == (10, 1, 60)
    mixed = {**deployed, "tomcat2": with_version(deployed["tomcat2"], "10.1.52-1~deb12u1")}
    with pytest.raises(TcsessionError) as e:
        planning.plan(inv, mixed, "delta", key=KEY)
    assert "both sides of the replay-protection change" in str(e.value) and "tomcat1 10.1.60, tomcat2 10.1.52" in str(e.value)
    # bullseye's tomcat9 9.0.118 is before it too: two bullseye nodes are fine together
    assert not planning.check_encryptable(inv, {"tomcat1": with_version(deployed["tomcat1"], "9.0.118-0+deb11u1"),
                                                "tomcat2": with_version(deployed["tomcat2"], "9.0.118-0+deb11u1")})
    old = {**deployed, "tomcat2": with_version(deployed["tomcat2"], "9.0.13-1")}
    old["tomcat2"] = dataclasses.replace(old["tomcat2"], packages={"tomcat9": "9.0.13-1", "curl": "x"})
    with pytest.raises(TcsessionError, match="tomcat2 runs Tomcat 9.0.13, which has no EncryptInterceptor"):
        planning.check_encryptable(inv, old)


def test_status_flags_decrypt_failures_since_the_membership_last_changed():
    from tcsession.status import judge_decrypt

    added = "Replication member added:[org.apache.catalina.tribes.membership.MemberImpl[tcp://{10, 153, 0, 113}:4000]]"
    failed = "Failed to decrypt message"  # tribes encryptInterceptor.decrypt.failed (Tomcat 10.1.60)
    assert judge_decrypt("\n".join([added, failed, failed])) == [failed, failed]
    assert judge_decrypt("\n".join([failed, added])) == []  # healed: the peer came back
    replay = "Failed to decrypt message: replay attack detected"  # what tomcat1 logged as tomcat2 rejoined
    assert judge_decrypt("\n".join([failed, added, replay])) == []
    assert judge_decrypt("\n".join([added] + [replay] * 3)) == [replay] * 3
    # status's log: pattern lines in order, then the error-priority copies prefixed SEVERE
    log = "\n".join([failed, added, replay, "SEVERE " + failed, "SEVERE " + replay])
    assert judge_decrypt(log) == []
