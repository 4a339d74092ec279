"""The log gate after a Tomcat restart, judged on log lines as Tomcat writes them.

Message texts: Tomcat 10.1.60's LocalStrings.properties (Debian's libtomcat10-java, from the
lab's apt cache: catalina-ha `deltaManager.*`, `standardSession.notSerializable`, tribes
`encryptInterceptor.decrypt.*`), filled in as the journal shows them; the Manager line is the
one the lab test provoked (tests/test_log_gate_lab.py)."""

from __future__ import annotations

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
