"""The msm jars on the control machine: resolved from a Maven-layout directory, converted for
Tomcat 10+ with Apache's real javax2jakarta, checked for the servlet namespace, and told for
status from the lock file. The jars are the test stand-in (tests/standin.py), built with javac."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest

import standin
from tcsession import maven, msmjars
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory
from conftest import ROOT

needs_tools = pytest.mark.skipif(not (shutil.which("javac") and shutil.which("javax2jakarta")),
                                 reason="needs javac and javax2jakarta (./dev.sh setup installs both)")


@pytest.fixture
def settings(tmp_path):
    repo = standin.write_repo(tmp_path / "repo", standin.standin_jars())
    return dataclasses.replace(load_inventory(ROOT / "hosts.toml").msm, maven_repo=str(repo))


def prepare(settings, major, tmp_path):
    return msmjars.prepare_jars(settings, major, tmp_path / "msm.lock", tmp_path / "cache")


@needs_tools
def test_tomcat9_gets_the_released_javax_jars(settings, tmp_path):
    jars, warnings = prepare(settings, 9, tmp_path)
    assert [j.name for j in jars] == ["memcached-session-manager-2.3.2.jar", "memcached-session-manager-tc9-2.3.2.jar",
                                      "spymemcached-2.12.3.jar"]
    assert not any(j.converted for j in jars) and warnings == ()
    assert msmjars.servlet_namespaces(jars[0].data, "core") == {"javax"}
    repo_core = tmp_path / "repo/de/javakaffee/msm/memcached-session-manager/2.3.2/memcached-session-manager-2.3.2.jar"
    assert jars[0].data == repo_core.read_bytes()


@needs_tools
def test_tomcat10_gets_converted_jars_with_stable_bytes(settings, tmp_path):
    jars, _ = prepare(settings, 10, tmp_path)
    assert [j.name for j in jars] == ["memcached-session-manager-2.3.2-jakarta.jar",
                                      "memcached-session-manager-tc9-2.3.2-jakarta.jar", "spymemcached-2.12.3.jar"]
    assert [j.converted for j in jars] == [True, True, False]
    assert msmjars.servlet_namespaces(jars[0].data, "core") == {"jakarta"}
    again, _ = prepare(settings, 10, tmp_path)  # from the conversion cache
    assert [j.sha256 for j in again] == [j.sha256 for j in jars]
    expected, why = msmjars.expected_digests(settings, 10, tmp_path / "msm.lock", tmp_path / "cache")
    assert expected == {j.name: j.sha256 for j in jars}, why


@needs_tools
def test_refuse_and_supplied_javax_jars_on_tomcat10(settings, tmp_path):
    with pytest.raises(TcsessionError, match=r'no memcached-session-manager release supports jakarta.* jakarta = "refuse"'):
        prepare(dataclasses.replace(settings, jakarta="refuse"), 10, tmp_path)
    with pytest.raises(TcsessionError, match=r"memcached-session-manager-2\.3\.2\.jar refers to javax\.servlet classes, "
                                             r"which Tomcat 11 does not have; refusing to copy it \(set \[msm\] jakarta"):
        prepare(dataclasses.replace(settings, jakarta="supplied"), 11, tmp_path)
    assert not (tmp_path / "cache" / "jakarta").exists()


@needs_tools
def test_jakarta_jars_refused_on_tomcat9(settings, tmp_path):
    converted, _ = prepare(settings, 10, tmp_path)
    repo = tmp_path / "jakarta-repo"
    jars = standin.standin_jars()
    core = next(k for k in jars if k.endswith("/memcached-session-manager-2.3.2.jar"))
    jars[core] = converted[0].data
    standin.write_repo(repo, jars)
    s = dataclasses.replace(settings, maven_repo=str(repo))
    with pytest.raises(TcsessionError, match=r"refers to jakarta\.servlet classes, which Tomcat 9 does not have"):
        msmjars.prepare_jars(s, 9, tmp_path / "other.lock", tmp_path / "other-cache")


def test_missing_converter_is_one_line_with_the_package(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    lock = tmp_path / "msm.lock"
    cache = tmp_path / "cache"
    # resolve works without any program; converting needs javax2jakarta
    maven.resolve([], settings.maven_repo, cache, lock)
    jar = tmp_path / "x.jar"
    jar.write_bytes(b"PK")
    with pytest.raises(TcsessionError, match=r"javax2jakarta not found on this machine; install it "
                                             r"\(apt-get install tomcat-jakartaee-migration\)"):
        msmjars.convert(jar, hashlib.sha256(b"PK").hexdigest(), cache)


def test_expected_digests_without_a_lock(settings, tmp_path):
    expected, why = msmjars.expected_digests(settings, 9, tmp_path / "none.lock", tmp_path / "cache")
    assert expected is None and "de.javakaffee.msm:memcached-session-manager:2.3.2 not in" in why


def test_unreadable_jar_is_named():
    with pytest.raises(TcsessionError, match=r"^x: not a readable jar"):
        msmjars.servlet_namespaces(b"not a zip", "x")


@pytest.mark.parametrize("name, managed", [
    ("memcached-session-manager-2.3.2.jar", True), ("memcached-session-manager-tc9-2.3.2-jakarta.jar", True),
    ("memcached-session-manager-tc7-1.9.7.jar", True), ("msm-kryo-serializer-2.3.2.jar", True),
    ("msm-javolution-serializer-2.1.1.jar", True), ("spymemcached-2.12.3.jar", True), ("kryo-4.0.0.jar", True),
    ("kryo-serializers-0.41.jar", True), ("asm-5.0.4.jar", True), ("objenesis-2.2.jar", True),
    ("minlog-1.3.0.jar", True), ("reflectasm-1.11.3.jar", True), ("javolution-5.4.3.1.jar", True),
    ("postgresql-42.7.jar", False), ("asm.jar", False), ("my-kryo-4.0.0.jar", False), ("kryo-extra.jar", False),
])
def test_managed_jar_names(name, managed):
    assert bool(msmjars.MANAGED_JAR.match(name)) is managed
