"""The plans themselves, pinned: `Plan.lines()` of a deploy and of its rollback for every case of
facts captured on lab hosts (tests/data/facts), compared with golden files byte for byte.

A restructuring of planning must reproduce them exactly; an intended change to what a deploy or
a rollback does shows up here as a diff to review. Regenerate after an intended change with
TCSESSION_UPDATE_GOLDEN=1 ./dev.sh test tests/test_plan_golden.py (then review `git diff`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tcsession import lab, state
from tcsession import plan as planning
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import parse_inventory
from tcsession.rollback import plan_rollback
from tcsession.steps import WriteFiles
from test_plan import jars_on
from test_waves import with_deployed_site

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"
GOLDEN = Path(__file__).parent / "golden" / "plans"
HOSTS = ("nginx", "tomcat1", "tomcat2")


def shipped(extra: str = ""):
    """The shipped hosts.toml with its [delta] and later tables replaced by `extra`."""
    return parse_inventory((ROOT / "hosts.toml").read_text().partition("[delta]")[0] + extra, Path("/x/hosts.toml"))


def shipped_with_app(setting: str, extra: str = ""):
    """The shipped hosts.toml with one more [app] setting (and `extra` instead of its [delta] on)."""
    text = (ROOT / "hosts.toml").read_text().partition("[delta]")[0]
    return parse_inventory(text.replace("test_page = true", f"test_page = true\n{setting}", 1) + extra,
                           Path("/x/hosts.toml"))


def captured(prefix: str, **override) -> dict:
    facts = {n: parse_facts((DATA / f"{prefix}-{n}.txt").read_text()) for n in HOSTS}
    facts.update({n: parse_facts((DATA / f"{f}.txt").read_text()) for n, f in override.items()})
    return facts


def stopped(f):
    return dataclasses.replace(f, active={**f.active, f.tomcat.unit: "inactive"})


def three_with_tomcat3_stopped():
    inv = parse_inventory(lab.render_inventory("tcsgold", "bookworm", 3, "10.153.0.0/24"), Path("/x/hosts.toml"))
    f = captured("deployed")
    return inv, {**f, "tomcat3": stopped(f["tomcat2"])}


def eight_nodes(extra: str = ""):
    inv = parse_inventory(lab.render_inventory("tcsgold", "bookworm", 8, "10.153.0.0/24") + "\n" + extra,
                          Path("/x/hosts.toml"))
    f = captured("deployed")
    return inv, with_deployed_site(inv, {"nginx": f["nginx"], "tomcat1": f["tomcat1"],
                                         **{f"tomcat{i}": f["tomcat2"] for i in range(2, 9)}})


def installed(facts: dict, *packages: str) -> dict:
    """The Tomcats' facts once `packages` are installed (the plan that follows an install)."""
    return {n: dataclasses.replace(f, packages={**f.packages, **{p: "1" for p in packages}})
            if n.startswith("tomcat") else f for n, f in facts.items()}


def msm_jars(facts):
    return {t: jars_on(facts[t]) for t in facts if t.startswith("tomcat")}


# case name -> (inventory, facts, mode, msm jars or None)
def cases():
    delta_change = "[delta]\nchannel_send_options = 2\n"
    msm_f = captured("msm-sticky")
    return {
        "first-deploy-fresh-hosts": (shipped(), {n: parse_facts((DATA / "bookworm-fresh-tomcat1.txt").read_text())
                                                 for n in HOSTS}, "delta", None),
        "delta-no-change": (shipped(), captured("deployed"), "delta", None),
        "delta-setting-change": (shipped(delta_change), captured("deployed"), "delta", None),
        "delta-other-capture-change": (shipped(delta_change), captured("bookworm-delta"), "delta", None),
        "delta-static-membership": (shipped('[delta]\nmembership = "static"\n'), captured("deployed"), "delta", None),
        "delta-backup-manager": (shipped('[delta]\nmanager = "backup"\n'), captured("deployed"), "delta", None),
        "delta-prebind-tomcat1": (shipped(), captured("deployed", tomcat1="prebind-delta-tomcat1"), "delta", None),
        "delta-firewall-on": (shipped('[firewall]\nbackend = "nftables"\n'), captured("deployed"), "delta", None),
        "delta-tomcat2-stopped": (shipped(), {**captured("deployed"),
                                              "tomcat2": stopped(captured("deployed")["tomcat2"])}, "delta", None),
        "delta-to-msm": (shipped(), captured("deployed"), "msm", msm_jars(msm_f)),
        "delta-to-msm-once-installed": (shipped(), installed(captured("deployed"), "memcached"), "msm",
                                        msm_jars(msm_f)),
        "delta-firewall-on-once-installed": (shipped('[firewall]\nbackend = "nftables"\n'),
                                             installed(captured("deployed"), "nftables"), "delta", None),
        # (the msm captures were deployed with the asynchronous backup, the default then)
        "msm-no-change": (shipped('[msm]\nbackup = "async"\n'), msm_f, "msm", msm_jars(msm_f)),
        "msm-to-sync-backup": (shipped(), msm_f, "msm", msm_jars(msm_f)),
        "msm-setting-change": (shipped('[msm]\nbackup = "async"\nrequest_uri_ignore_pattern = ".*\\\\.(ico|css)$"\n'),
                               msm_f, "msm", msm_jars(msm_f)),
        "msm-non-sticky": (shipped("[msm]\nsticky = false\n"), msm_f, "msm", msm_jars(msm_f)),
        "msm-to-delta": (shipped(), msm_f, "delta", None),
        "delta-same-site-lax": (shipped_with_app('same_site = "lax"'), captured("deployed"), "delta", None),
        "msm-global-same-site-strict": (shipped_with_app('same_site = "strict"', '[msm]\nbackup = "async"\nscope = "global"\n'),
                                        msm_f, "msm", msm_jars(msm_f)),
        "delta-drain-timeout-30": (shipped("[rolling]\ndrain_timeout = 30\n"), captured("deployed"), "delta", None),
        "scale-out-2-to-3": (*three_with_tomcat3_stopped(), "delta", None),
        "eight-nodes-change": (*eight_nodes(delta_change), "delta", None),
        "eight-nodes-backup-manager": (*eight_nodes('[delta]\nmanager = "backup"\n'), "delta", None),
    }


def applied(facts, p):
    """The hosts' files once plan `p` was applied (late files too), and its records."""
    current, records = {}, {}
    for s in p.steps:
        if isinstance(s, WriteFiles):
            files = current.setdefault(s.host, {})
            for c in (*s.changes, *s.deferred):
                files[c.path] = FileFact(c.path, c.after, c.mode, c.owner)
            for r in s.manifest.files:
                c = next(c for c in (*s.changes, *s.deferred) if c.path == r.path)
                if r.saved:
                    path = f"{state.deploy_dir(s.deploy_id)}/{r.saved}"
                    files[path] = FileFact(path, c.before, "600", "root:root")
            records[s.host] = state.Record(s.host, s.manifest)
    return current, records


def render(name: str) -> str:
    inv, facts, mode, jars = cases()[name]
    p = planning.plan(inv, facts, mode, jars, deploy_id="20261201T100000Z-abcdef", time="t")
    out = [f"# {name}: deploy --mode={mode}", *p.lines()]
    current, records = applied(facts, p)
    if records:
        rb = plan_rollback(inv, records, current, facts)
        out += ["", f"# {name}: rollback", *rb.lines()]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("name", sorted(cases()))
def test_plan_lines_match_the_golden_file(name):
    got = render(name)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("TCSESSION_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert path.is_file(), f"{path}: no golden file; run with TCSESSION_UPDATE_GOLDEN=1 and review it"
    assert got == path.read_text()


def test_every_case_plans_something_distinct():
    """The goldens are not all alike (a case whose facts did not load would plan the same)."""
    rendered = {name: render(name) for name in cases()}
    assert len(set(rendered.values())) == len(rendered)
    assert rendered["delta-no-change"].count("\n") == 1 and rendered["msm-no-change"].count("\n") == 1
