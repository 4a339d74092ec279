"""The log gate after a Tomcat restart, judged on log lines as Tomcat writes them.

Message texts: Tomcat 10.1.60's LocalStrings.properties (Debian's libtomcat10-java, from the
lab's apt cache: catalina-ha `deltaManager.*`, `standardSession.notSerializable`, tribes
`encryptInterceptor.decrypt.*`), filled in as the journal shows them; the Manager line is the
one the lab test provoked (tests/test_log_gate_lab.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tcsession import shell
from tcsession.steps import RestartTomcat, judge_log_gate

FINE = [
    "Starting service [Catalina]",
    "Manager [localhost#]: skipping state transfer. No members active in cluster group.",
    "Manager [localhost#]: session state sent at 12/1/26, 11:20 AM received in [104] ms.",
    "Replication member added:[org.apache.catalina.tribes.membership.MemberImpl[tcp://{10, 153, 31, 113}:4000]]",
    "SEVERE The web application [ROOT] appears to have started a thread named [x] but has failed to stop it.",
    "Server startup in [2345] milliseconds",
]
BAD = [
    ("Unable to serialize delta request for sessionid [4A5B.tomcat1]", "cannot replicate"),
    ("Manager [localhost#]: No session state sent at [12/1/26, 11:20 AM] received, timing out after [60,000] ms.",
     "state transfer timed out"),
    ("Manager [localhost#]: No session state send at 12/1/26 11:20 AM received, timing out after 60,000 ms.",
     "state transfer timed out"),  # Tomcat 7's wording
    ("Failed to decrypt message", "decrypt"),
    ("Failed to decrypt message: replay attack detected", "decrypt"),
    ("java.lang.NoClassDefFoundError: de/javakaffee/web/msm/MemcachedSessionService", "missing class"),
    ("java.io.NotSerializableException: com.example.Cart", "not serializable"),
    ("Cannot serialize session attribute [cart] for session [4A5B]", "not serializable"),
    ("SEVERE Exception starting filter [x]: Manager [localhost#] failed", "session manager"),
    ("SEVERE java.lang.ClassNotFoundException: org.example.MissingManager", "session manager"),
]


def test_fine_lines_pass():
    assert judge_log_gate(FINE) is None


@pytest.mark.parametrize("line,means", BAD, ids=[b[1] + str(i) for i, b in enumerate(BAD)])
def test_each_line_users_hit_stops_the_restart(line, means):
    what, found = judge_log_gate(FINE[:2] + [line] + FINE[2:])
    assert found == line and means in what


def test_the_restart_step_names_the_line_and_says_the_next_node_was_not_touched():
    step = RestartTomcat("tomcat1", "its configuration changes", "tomcat10", "10.153.0.112", 8080, "d")
    assert "log_gate" not in step.script() and shell.log_gate("tomcat10") in step.script()
    out = "state: x\ngate: Server startup in [10] ms\ngate: java.io.NotSerializableException: com.example.Cart\n"
    problem = step.check(out)
    assert problem.startswith("tomcat1: tomcat10 restarted but logged a session attribute that is not serializable: "
                              "java.io.NotSerializableException: com.example.Cart")
    assert "next Tomcat was not touched" in problem
    assert step.check("gate: Server startup in [10] ms\n") is None
    # a line is only judged when the gate printed it (the page's own output says nothing)
    assert step.check("java.io.NotSerializableException: x\n") is None


# --------------------------------------------------------------------------- deserialization, peers

# Tomcat 10.1.60's texts (catalina-ha deltaManager.loading.ioe / .cnfe / receiveMessage.error, tribes'
# abstractReplicatedMap.unable.deserialize.MapMessage / mapMessage.deserialize.error.value) and
# memcached-session-manager 2.3.2's, with the JDK's InvalidClassException as the journal shows the cause.
INVALID = ("SEVERE java.io.InvalidClassException: sample.Cart; local class incompatible: stream classdesc "
           "serialVersionUID = 1, local class serialVersionUID = 2")
DESERIALIZATION = [
    "SEVERE Manager [localhost#/sample]: Unable to receive message through TCP channel",
    "SEVERE IOException while loading persisted sessions: [java.io.InvalidClassException: sample.Cart; local class incompatible]",
    "SEVERE ClassNotFoundException while loading persisted sessions: [java.lang.ClassNotFoundException: sample.Extra]",
    "SEVERE Unable to deserialize MapMessage.",
    "SEVERE Failed to deserialize MapMessage value",
    "SEVERE Could not deserialize session with id [4A5B-n1] from memcached.",
    INVALID,
]


@pytest.mark.parametrize("line", DESERIALIZATION)
def test_every_managers_deserialization_error_stops_the_restart(line):
    what, found = judge_log_gate(FINE + [line])
    assert found == line and "could not deserialize" in what
    assert re.search("|".join(shell.GATE_GREP), line)  # the journal grep keeps it


def test_a_deserialization_error_comes_with_the_class_its_cause_names():
    cause = "SEVERE java.lang.ClassNotFoundException: sample.Extra"
    what, found = judge_log_gate(FINE + [DESERIALIZATION[0], cause])
    assert found == DESERIALIZATION[0] + " | " + cause
    # with sessions = "drop", a class it does not name is not expected
    assert judge_log_gate(FINE + [DESERIALIZATION[0], cause], dropped=("sample.Cart",))[1].endswith("sample.Extra")


def test_with_sessions_drop_only_the_dropped_classes_errors_are_expected():
    lines = FINE + [DESERIALIZATION[0], INVALID]
    assert judge_log_gate(lines, dropped=("sample.Cart",)) is None
    assert judge_log_gate(lines, dropped=("sample.Other",))[1] == DESERIALIZATION[0] + " | " + INVALID
    other = "SEVERE java.io.InvalidClassException: sample.Other; local class incompatible"
    assert judge_log_gate(lines + [other], dropped=("sample.Cart",))[1].startswith(DESERIALIZATION[0] + " | ")
    # the other gates still hold
    assert judge_log_gate(lines + ["Failed to decrypt message"], dropped=("sample.Cart",))[0].startswith("a message")


def test_an_old_version_peer_that_cannot_read_stops_the_rollout_at_that_node(tmp_path):
    from fakeremote import Expect, FakeRemote

    from tcsession.apply import Interpreter
    from tcsession.inventory import load_inventory
    from tcsession.steps import Plan

    root = Path(__file__).resolve().parent.parent
    inv = load_inventory(root / "hosts.toml")
    peers = {"tomcat1": (("tomcat2", "tomcat10"),), "tomcat2": (("tomcat1", "tomcat10"),)}
    steps = tuple(RestartTomcat(h, "its applications change: /sample", "tomcat10", inv.host(h).address, 8080, "d",
                                peers=peers[h]) for h in ("tomcat1", "tomcat2"))
    fake = FakeRemote([
        Expect("tomcat1", "systemctl restart tomcat10", "since: 1000\napp: /sample HTTP 200\ngate: Server startup in [9] ms"),
        Expect("tomcat2", "--since @998", "gate: " + DESERIALIZATION[0]),
    ])
    outcome = Interpreter(fake, {h.name: h for h in inv.hosts}).apply(Plan("deploy delta", steps),
                                                                      [h.name for h in inv.hosts])
    fake.assert_done()  # tomcat2 was not restarted
    assert not outcome.ok and outcome.failed is steps[0]
    assert outcome.error == (
        "tomcat2: tomcat10 (still running the previous version) logged a session it could not deserialize (the "
        f"application's versions disagree) once tomcat1 restarted: {DESERIALIZATION[0]} (the next Tomcat was not "
        "touched; tomcat1 runs the new version: `inv rollback` puts the previous one back)")
    assert fake.log[1][1].startswith("sleep 1\n") and "_SYSTEMD_INVOCATION_ID" in fake.log[1][1]
