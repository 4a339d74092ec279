"""Where the real-jar msm tests find their jars (conftest.real_msm_repo): they may skip on a
developer's machine without them, never under CI=true."""

from __future__ import annotations

import pytest

import conftest


def test_without_jars_ci_fails_and_a_developer_skips(monkeypatch, tmp_path):
    monkeypatch.delenv("TCSESSION_MAVEN_REPO", raising=False)
    monkeypatch.setattr(conftest, "MSM_FIXTURE_REPO", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI: no real memcached-session-manager jars"):
        conftest.real_msm_repo()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conftest.real_msm_repo()


def test_the_fixture_repo_and_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("TCSESSION_MAVEN_REPO", raising=False)
    monkeypatch.setattr(conftest, "MSM_FIXTURE_REPO", tmp_path)
    assert conftest.real_msm_repo() == str(tmp_path)
    monkeypatch.setenv("TCSESSION_MAVEN_REPO", "https://repo.example/maven2")
    assert conftest.real_msm_repo() == "https://repo.example/maven2"
