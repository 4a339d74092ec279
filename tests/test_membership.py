"""Issue 24: `[delta] membership` not set means the kind the cluster already runs (an existing
cluster never changes kind unasked), and static membership for a new cluster (no fixed sleep at
each start). Judged on captured lab facts (tests/data/facts: a deployed multicast cluster, fresh
hosts)."""

from __future__ import annotations

import dataclasses

from tcsession import plan as planning
from tcsession import serverxml
from tcsession.facts import parse_facts
from tcsession.rollout import resolve_membership
from test_plan_golden import DATA, HOSTS, captured, shipped


def fresh() -> dict:
    return {n: parse_facts((DATA / "bookworm-fresh-tomcat1.txt").read_text()) for n in HOSTS}


def test_not_set_on_fresh_hosts_is_static_and_said():
    inv, note = resolve_membership(shipped(), fresh())
    assert inv.delta.membership == "static"
    assert note.startswith("[delta] membership not set: static, the default for a new cluster")


def test_not_set_on_a_running_multicast_cluster_keeps_multicast_and_changes_nothing():
    facts = captured("deployed")
    inv, note = resolve_membership(shipped(), facts)
    assert inv.delta.membership == "multicast" and "the kind this cluster runs" in note
    assert planning.plan(shipped(), facts, "delta").empty  # no switch, no restart


def test_not_set_with_the_cluster_stopped_still_keeps_its_kind():
    facts = captured("deployed")
    down = {n: dataclasses.replace(f, active={**f.active, f.tomcat.unit: "inactive"}) if f.tomcat else f
            for n, f in facts.items()}
    assert resolve_membership(shipped(), down)[0].delta.membership == "multicast"


def test_not_set_on_a_static_cluster_keeps_static():
    facts = captured("deployed")
    static = shipped('[delta]\nmembership = "static"\n')
    p = planning.plan(static, facts, "delta")
    written = {}
    for s in p.steps:
        for c in getattr(s, "changes", ()):
            if c.path.endswith("server.xml"):
                written[s.host] = c.after
    assert set(written) == {"tomcat1", "tomcat2"}
    now = {n: dataclasses.replace(f, files={**f.files, f.tomcat.server_xml: dataclasses.replace(
        f.files[f.tomcat.server_xml], content=written[n])}) if n in written else f for n, f in facts.items()}
    assert serverxml.read_cluster(written["tomcat1"], "x")["membership"] == "static"
    assert resolve_membership(shipped(), now)[0].delta.membership == "static"


def test_set_is_as_written_even_against_the_running_kind():
    inv, note = resolve_membership(shipped('[delta]\nmembership = "static"\n'), captured("deployed"))
    assert (inv.delta.membership, note) == ("static", None)


def test_a_switch_of_kind_on_a_running_cluster_is_said_and_keeping_it_is_not():
    from tcsession.rollout import membership_switch

    facts = captured("deployed")
    static, _ = resolve_membership(shipped('[delta]\nmembership = "static"\n'), facts)
    said = membership_switch(static, facts)
    assert said.startswith("switching membership multicast -> static on a running cluster (tomcat1, tomcat2)")
    assert membership_switch(resolve_membership(shipped(), facts)[0], facts) is None  # kept: nothing to say
    assert membership_switch(static, fresh()) is None  # nothing runs yet


def test_a_half_done_switch_is_named_whatever_the_key_says():
    """tomcat1 already on static, tomcat2 still on multicast (a switch stopped half way): not set
    resolves to multicast (the kind every earlier tcsession wrote), and that is still a switch for
    tomcat1; set to static, it is one for tomcat2."""
    from tcsession.rollout import membership_switch

    facts = captured("deployed")
    static = shipped('[delta]\nmembership = "static"\n')
    p = planning.plan(static, facts, "delta")
    after = next(c.after for s in p.steps for c in getattr(s, "changes", ())
                 if s.host == "tomcat1" and c.path.endswith("server.xml"))
    f1 = facts["tomcat1"]
    half = {**facts, "tomcat1": dataclasses.replace(f1, files={**f1.files, f1.tomcat.server_xml: dataclasses.replace(
        f1.files[f1.tomcat.server_xml], content=after)})}
    inv, note = resolve_membership(shipped(), half)
    assert inv.delta.membership == "multicast" and note
    assert membership_switch(inv, half).startswith("switching membership static -> multicast on a running cluster "
                                                   "(tomcat1)")
    assert "(tomcat2)" in membership_switch(resolve_membership(static, half)[0], half)


def test_every_plan_through_the_rollout_sees_the_running_kind():
    """The rollout resolves it too (an upgrade or a rollback plans through it without plan()): with
    the key not set on a running multicast cluster, each restarted node waits for its running peer
    as a member (the members it counts are those on the inventory's kind)."""
    from tcsession import rollout

    facts = captured("deployed")
    inv = shipped()
    assert inv.delta.membership is None
    assert rollout.cluster_members_now(resolve_membership(inv, facts)[0], facts, {"tomcat1", "tomcat2"}) == {
        "tomcat1", "tomcat2"}


# --------------------------------------------------------------------------- the switch (issue 24)


def _written(p) -> dict[str, bytes]:
    out = {}
    for s in p.steps:
        for c in getattr(s, "changes", ()):
            if c.path.endswith("server.xml"):
                out[s.host] = c.after
    return out


def _after(facts: dict, written: dict[str, bytes], restarted=None) -> dict:
    """The facts once `written` is each host's server.xml, and the Tomcats `restarted` (default:
    those hosts) stamped as started on it."""
    from tcsession import state
    from tcsession.facts import FileFact

    restarted = set(written) if restarted is None else set(restarted)
    out = {}
    for n, f in facts.items():
        if n in written:
            files = {**f.files, f.tomcat.server_xml: dataclasses.replace(f.files[f.tomcat.server_xml],
                                                                          content=written[n])}
            f = dataclasses.replace(f, files=files)
        if n in restarted:
            stamp = state.applied_path(f.tomcat.unit)
            digest = planning.config_digest({p: f.content(p) for p in planning.tomcat_config_paths(f.tomcat)})
            old = f.files.get(stamp)
            fact = dataclasses.replace(old, content=digest.encode()) if old else FileFact(stamp, digest.encode())
            f = dataclasses.replace(f, files={**f.files, stamp: fact})
        out[n] = f
    return out


def _switch(inv, facts) -> tuple[list[str], dict]:
    """Each pass planned on the facts the previous one left, as the deploy does: the kinds, and the
    facts at the end. Every pass restarts both Tomcats, each waiting to see its peer (a member
    now, or restarted before it in the same pass)."""
    from tcsession.rollout import membership_passes
    from tcsession.steps import RestartTomcat

    done = []
    passes = membership_passes(inv, facts)
    for i, kind in enumerate(passes):
        assert membership_passes(inv, facts) == passes[i:]  # the deploy again would continue from here
        step = dataclasses.replace(inv, delta=dataclasses.replace(inv.delta, membership=kind))
        p = planning.plan(step, facts, "delta")
        restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
        assert [(s.host, s.members, s.waits_for_state) for s in restarts] == [
            ("tomcat1", 1, True), ("tomcat2", 1, True)], kind
        written = _written(p)
        assert set(written) == {"tomcat1", "tomcat2"}
        summary = serverxml.read_cluster(written["tomcat1"], "x")
        assert (summary["membership"], summary["bridge"]) == (kind.removeprefix("bridge-"), kind.startswith("bridge-"))
        facts = _after(facts, written)
        done.append(kind)
    return done, facts


def test_a_switch_to_static_goes_through_both_bridges_one_pass_each_and_then_asks_nothing():
    from tcsession.rollout import compatible, membership_passes, membership_switch

    facts = captured("deployed")  # a running multicast cluster
    static = shipped('[delta]\nmembership = "static"\n')
    note = membership_switch(static, facts)
    assert note.startswith("switching membership multicast -> static on a running cluster (tomcat1, tomcat2): "
                           "3 rolling pass(es)")
    assert "pass 2/3 bridge-static: StaticMembershipService, and a StaticMembershipInterceptor" in note
    kinds, facts = _switch(static, facts)
    assert kinds == ["bridge-multicast", "bridge-static", "static"]
    assert membership_switch(static, facts) is None and membership_passes(static, facts) == ["static"]
    # each pass's nodes see those of the one before (and not two steps apart)
    assert all(compatible(a, b) for a, b in zip(["multicast"] + kinds, kinds))
    assert not compatible("multicast", "bridge-static") and not compatible("bridge-multicast", "static")
    # and back: multicast through the same bridges in the other order
    multicast = shipped('[delta]\nmembership = "multicast"\n')
    kinds, facts = _switch(multicast, facts)
    assert kinds == ["bridge-static", "bridge-multicast", "multicast"]
    assert membership_switch(multicast, facts) is None
    assert resolve_membership(shipped(), facts)[0].delta.membership == "multicast"


def test_a_switch_left_half_done_continues_from_where_it_stopped():
    """A pass stopped after tomcat1: tomcat1 on the first bridge, tomcat2 still multicast. The
    switch goes on from the first bridge (tomcat2 is restarted on it, tomcat1 is not); with the key
    unset the deploy cannot guess the target (both kinds run), and it is refused as before."""
    from tcsession.rollout import membership_passes, membership_switch

    facts = captured("deployed")
    static = shipped('[delta]\nmembership = "static"\n')
    step = dataclasses.replace(static, delta=dataclasses.replace(static.delta, membership="bridge-multicast"))
    written = _written(planning.plan(step, facts, "delta"))
    # every file written (a pass's first step), tomcat1 restarted on it, tomcat2 not (still multicast)
    half = _after(facts, written, restarted={"tomcat1"})
    assert membership_passes(static, half) == ["bridge-multicast", "bridge-static", "static"]
    p = planning.plan(step, half, "delta")  # the first of them restarts tomcat2 alone
    assert [s.host for s in p.steps if type(s).__name__ == "RestartTomcat"] == ["tomcat2"]
    assert membership_switch(shipped(), half) is not None  # not set: resolved to multicast, tomcat1 differs
    # that pass done: the next two
    assert membership_passes(static, _after(facts, written)) == ["bridge-static", "static"]


def test_a_deploy_refused_on_a_switch_left_on_a_bridge_says_finish_it_or_go_back():
    """A switch to static stopped after its first pass (both Tomcats on the multicast bridge), then
    a deploy without --switch-membership: "remove the key" would not help (the key unset, the
    bridge's kind is not a kind to keep); the line says how to finish the switch or go back."""
    from tcsession.rollout import membership_switch, resolve_membership, switch_refusal

    facts = captured("deployed")
    static = shipped('[delta]\nmembership = "static"\n')
    step = dataclasses.replace(static, delta=dataclasses.replace(static.delta, membership="bridge-multicast"))
    on_bridge = _after(facts, _written(planning.plan(step, facts, "delta")))
    inv, note = resolve_membership(static, on_bridge)
    line = switch_refusal(inv, on_bridge, membership_switch(inv, on_bridge), note)
    assert line.startswith(f'{static.path}: [delta] membership = "static": a switch of membership was left half '
                           "done (a bridge is running): switching membership bridge-multicast -> static")
    assert line.endswith("give --switch-membership to finish it, or set the key to the kind it came from and give "
                         "--switch-membership to go back (nothing was changed)") and "\n" not in line
    # a cluster on one plain kind: the line as before
    inv, note = resolve_membership(static, facts)
    assert switch_refusal(inv, facts, membership_switch(inv, facts), note).endswith(
        "to switch, give --switch-membership; to keep the running kind, remove the key (nothing was changed)")
