"""[app] jar_scan = "listed" (issue 24: a faster Tomcat start, off by default): a managed
JarScanner in conf/context.xml that scans only the listed jars (tag libraries and pluggability);
patched with lxml on Apache's stock context.xml of each Tomcat line that has the filter, byte for
byte back."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT
from tcsession import cookies, jarscan
from tcsession import plan as planning
from tcsession.errors import TcsessionError
from tcsession.inventory import InventoryError, parse_inventory
from test_plan_golden import captured, shipped_with_app

VERSIONS = ["8.5.100", "9.0.121", "10.1.59", "11.0.25"]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_jar_scanner_goes_in_and_out_of_a_stock_context_byte_for_byte(version):
    stock = (FIXTURES / version / "context.xml").read_bytes()
    listed = jarscan.patch_context_jar_scan(stock, ("taglibs-*.jar", "shop-tags.jar"), "t")
    added = [l for l in listed.decode().splitlines() if l not in stock.decode().splitlines()]
    assert len(added) == 2 and added[1].strip() == (
        '<JarScanner><JarScanFilter defaultTldScan="false" tldScan="taglibs-*.jar,shop-tags.jar" '
        'defaultPluggabilityScan="false" pluggabilityScan="taglibs-*.jar,shop-tags.jar" /></JarScanner>')
    assert jarscan.read_scanned_jars(listed, "t") == ("taglibs-*.jar", "shop-tags.jar")
    assert jarscan.read_scanned_jars(stock, "t") is None
    assert jarscan.patch_context_jar_scan(listed, ("taglibs-*.jar", "shop-tags.jar"), "t") == listed  # twice is once
    none = jarscan.patch_context_jar_scan(listed, (), "t")
    assert jarscan.read_scanned_jars(none, "t") == () and none.count(b"<JarScanner") == 1
    assert jarscan.patch_context_jar_scan(none, None, "t") == stock
    # beside the SameSite CookieProcessor, in the order a deploy patches: again is no change, both out is stock
    both = jarscan.patch_context_jar_scan(cookies.patch_context_cookies(stock, "lax", "t"), (), "t")
    assert jarscan.patch_context_jar_scan(cookies.patch_context_cookies(both, "lax", "t"), (), "t") == both
    assert jarscan.patch_context_jar_scan(cookies.patch_context_cookies(both, None, "t"), None, "t") == stock


def test_an_operators_own_jar_scanner_is_refused_with_the_setting_and_left_alone_without():
    theirs = b'<?xml version="1.0"?>\n<Context>\n    <JarScanner scanClassPath="false" />\n</Context>\n'
    with pytest.raises(TcsessionError, match=r"tomcat1:/etc/tomcat10/context.xml: has a <JarScanner> of your own"
                       ) as info:
        jarscan.patch_context_jar_scan(theirs, (), "tomcat1:/etc/tomcat10/context.xml")
    assert "changed nothing" in str(info.value) and "\n" not in str(info.value)
    assert jarscan.patch_context_jar_scan(theirs, None, "t") == theirs


def test_listed_scanning_is_planned_inside_each_drained_restart_and_off_by_default():
    assert not planning.plan(shipped_with_app('test_page = true'.replace("test_page = true", "")),
                             captured("deployed"), "delta").steps  # default: nothing to change
    p = planning.plan(shipped_with_app('jar_scan = "listed"\njars_to_scan = ["taglibs-standard-impl-*.jar"]'),
                      captured("deployed"), "delta")
    restarts = [s for s in p.steps if type(s).__name__ == "RestartTomcat"]
    assert [s.host for s in restarts] == ["tomcat1", "tomcat2"] and all(s.drain for s in restarts)
    for s in restarts:
        (change,) = s.files
        assert change.path == "/etc/tomcat10/context.xml"
        assert jarscan.read_scanned_jars(change.after, "t") == ("taglibs-standard-impl-*.jar",)
        assert jarscan.patch_context_jar_scan(change.after, None, "t") == change.before


@pytest.mark.parametrize("extra, message", [
    ('jars_to_scan = ["a.jar"]', '[app] jars_to_scan is read only with jar_scan = "listed"'),
    ('jar_scan = "listed"\njars_to_scan = ["a.jar, b.jar"]', '[app] jars_to_scan = an array has "a.jar, b.jar", not a jar file name'),
    ('jar_scan = "some"', '[app] jar_scan = "some" is not one of "all", "listed"'),
])
def test_bad_settings_name_the_key_and_the_fix(extra, message):
    text = (ROOT / "hosts.toml").read_text().replace("test_page = true", f"test_page = true\n{extra}", 1)
    with pytest.raises(InventoryError) as info:
        parse_inventory(text, Path("/x/hosts.toml"))
    assert any(message in e for e in info.value.errors), info.value.errors
