"""Issue 19's bad and careless inputs: each refused with one line naming the file, table, key or
host and a fix that works, before any changing command (the strict TEST DOUBLE of fakeremote.py
stands in for SSH where hosts are needed: it fails on any command it was not told to expect)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcsession import clusterkey
from tcsession.errors import TcsessionError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- 4. the cluster key file


def test_a_key_file_that_is_a_directory_is_told_so_not_chmod(tmp_path):
    with pytest.raises(TcsessionError) as e:
        clusterkey.key_for(tmp_path)
    assert f"{tmp_path}: the cluster key file ([delta] key_file) is a directory" in str(e.value)
    assert "chmod" not in str(e.value)


def test_a_dangling_key_link_is_named_and_nothing_is_generated(tmp_path):
    link = tmp_path / "hosts.cluster-key"
    link.symlink_to(tmp_path / "gone")
    with pytest.raises(TcsessionError, match=r"is a link to a file that does not exist; point the link"):
        clusterkey.key_for(link)
    assert not (tmp_path / "gone").exists()  # not generated through the link


def test_a_key_file_the_operator_cannot_read_names_the_file_and_the_fix(tmp_path):
    """Run as an unprivileged user for real (root reads anything): the key under a root-only
    directory cannot even be looked at."""
    import shutil
    import tempfile

    path = tmp_path / "hosts.cluster-key"
    clusterkey.key_for(path)
    os.chmod(tmp_path, 0o700)
    # the two modules it needs, where the unprivileged user can read them (the checkout may not be)
    code_dir = Path(tempfile.mkdtemp(prefix="tcs-nobody-"))
    try:
        os.chmod(code_dir, 0o755)
        (code_dir / "tcsession").mkdir(mode=0o755)
        for name in ("__init__.py", "clusterkey.py", "errors.py"):
            shutil.copy(ROOT / "tcsession" / name, code_dir / "tcsession" / name)
            os.chmod(code_dir / "tcsession" / name, 0o644)
        code = ("import sys; from tcsession import clusterkey; from tcsession.errors import TcsessionError\n"
                "try: clusterkey.key_for(sys.argv[1])\nexcept TcsessionError as e: print(e)\n")
        r = subprocess.run(["/usr/bin/python3", "-c", code, str(path)], capture_output=True, text=True, user=65534,
                           cwd="/", env={"PYTHONPATH": str(code_dir), "PATH": os.environ.get("PATH", "")}, timeout=60)
    finally:
        shutil.rmtree(code_dir)
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert r.stdout.strip() == (f"{path}: the cluster key file ([delta] key_file) cannot be read (Permission denied); "
                                f"{clusterkey.FIX}")


def test_a_dry_run_writes_no_key_file(tmp_path):
    path = tmp_path / "hosts.cluster-key"
    assert clusterkey.key_for(path, create=False) == ""
    assert not path.exists()


# --------------------------------------------------------------------------- 5, 6. the inventory


def inventory_error(tmp_path, text: str) -> str:
    from tcsession.inventory import load_inventory

    path = tmp_path / "hosts.toml"
    path.write_text(text)
    with pytest.raises(TcsessionError) as e:
        load_inventory(path)
    return str(e.value)


def real_servers(address: str = "192.0.2.11", ssh: str = "") -> str:
    return (f'[ssh]\nuser = "root"\n{ssh}\n[nginx.nginx]\naddress = "192.0.2.10"\n'
            f'[tomcat.tomcat1]\naddress = "{address}"\n[tomcat.tomcat2]\naddress = "192.0.2.12"\n')


def test_a_public_key_is_told_first_that_it_is_public_whatever_its_mode(tmp_path):
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1c2VyQGhvc3QAAAAAAAAAAAAAAAAAAAAAAAAAAAAA user@host\n")
    os.chmod(pub, 0o644)  # as ssh-keygen leaves a public key: readable by all
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    msg = inventory_error(tmp_path, real_servers(ssh=f'key = "{pub}"\nknown_hosts = "{kh}"\n'))
    assert f"{pub} is a public key; give the private key ({tmp_path / 'id_ed25519'})" in msg
    assert "chmod" not in msg


@pytest.mark.parametrize("value, expected", [
    ("192.0.2.11; touch x", 'is not an IPv4 address (it contains a space ";"); write the host\'s own address such as "192.0.2.10"'),
    ("$(reboot)", 'is not an IPv4 address (it contains "$" "(" ")"); write the host\'s own address such as "192.0.2.10"'),
    ("http://192.0.2.11/", 'is a URL, not an address; write the host\'s own IPv4 address such as "192.0.2.10"'),
    ("192.0.2.11/x", 'is not an IPv4 address (it contains "/"); write the host\'s own address such as "192.0.2.10"'),
    ("192.0.2.0/24", 'is a network, not an address; write the host\'s own address, e.g. "192.0.2.0"'),
])
def test_an_address_that_is_not_one_is_told_what_it_is_and_what_is_expected(tmp_path, value, expected):
    msg = inventory_error(tmp_path, real_servers(address=value, ssh="agent = true\n"))
    assert "[tomcat.tomcat1]" in msg and "address" in msg and expected in msg, msg


# --------------------------------------------------------------------------- 1, 3. refused before the install


DATA = Path(__file__).parent / "data" / "facts"


def facts_of(name: str, **replace):
    import dataclasses

    from tcsession.facts import parse_facts

    f = parse_facts((DATA / f"{name}.txt").read_text())
    return dataclasses.replace(f, **replace) if replace else f


def lab_inventory(tomcats: int, extra: str = "", remove: str = ""):
    from tcsession import lab
    from tcsession.inventory import parse_inventory

    text = lab.render_inventory("tcsref", "bookworm", tomcats, "10.153.0.0/24")
    if remove:
        text = text.replace(f"[tomcat.{remove}]\n", f"[tomcat.{remove}]\nremove = true\n")
    return parse_inventory(text + "\n" + extra, Path("/x/hosts.toml"))


def test_msm_removal_is_refused_before_memcached_is_installed():
    """(#19.1) tomcat1 and tomcat2 have no memcached yet: the refusal came only after installing it."""
    from tcsession import plan as planning

    inv = lab_inventory(3, remove="tomcat3")
    facts = {"nginx": facts_of("deployed-nginx"), "tomcat1": facts_of("deployed-tomcat1"),
             "tomcat2": facts_of("deployed-tomcat2"), "tomcat3": facts_of("deployed-tomcat2")}
    assert planning.packages_to_install(inv.host("tomcat1"), facts["tomcat1"], "msm") == ("memcached",)
    with pytest.raises(TcsessionError, match=r"\[tomcat\.tomcat3\] remove = true in msm mode: refused .*"
                                             r"tcsession changed nothing$"):
        planning.plan(inv, facts, "msm")


def test_encryption_across_the_replay_change_is_refused_by_the_candidate_version_before_the_install():
    """(#19.3) tomcat2 is fresh; apt would install 10.1.55 (before replay protection, 10.1.56)
    beside tomcat1's 10.1.60: refused before the install, naming both versions."""
    from tcsession import plan as planning

    inv = lab_inventory(2, "[delta]\nencrypt = true\n")
    fresh = facts_of("bookworm-fresh-tomcat1", candidates={"tomcat10": "10.1.55-1~deb12u1", "nginx": "1.22.1"})
    facts = {"nginx": facts_of("deployed-nginx"), "tomcat1": facts_of("deployed-tomcat1"), "tomcat2": fresh}
    with pytest.raises(TcsessionError, match=r"both sides of the replay-protection change .*tomcat1 10\.1\.60, "
                                             r"tomcat2 10\.1\.55 \(the version its install would bring\)"):
        planning.plan(inv, facts, "delta", key="ab" * 32)
    # on the same side, the install goes ahead (and the check is made again once installed)
    same = {**facts, "tomcat2": facts_of("bookworm-fresh-tomcat1", candidates={"tomcat10": "10.1.60-1~deb12u1"})}
    p = planning.plan(inv, same, "delta", key="ab" * 32)
    assert [type(s).__name__ for s in p.steps][-1] == "Replan"


def test_the_candidate_versions_are_read_from_apt_cache_policy():
    from tcsession.facts import parse_facts

    text = (DATA / "bookworm-fresh-tomcat1.txt").read_text().replace(
        "@@available\ntomcat10\nnginx\nmemcached\n", "@@available\ntomcat10 10.1.60-1~deb12u1\nnginx 1.22.1-9+deb12u12\n")
    f = parse_facts(text)
    assert f.available == ("tomcat10", "nginx") and f.candidates["tomcat10"] == "10.1.60-1~deb12u1"


# --------------------------------------------------------------------------- 8. msm messages name the inventory


def test_msm_jar_messages_name_the_inventory_given_not_hosts_toml(tmp_path):
    import dataclasses

    from tcsession import msmjars
    from tcsession.inventory import load_inventory

    settings = dataclasses.replace(load_inventory(ROOT / "hosts.toml").msm, maven_repo=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TcsessionError) as e:
        msmjars.prepare_jars(settings, 9, tmp_path / "msm.lock", tmp_path / "cache", inventory="/srv/ops/prod.toml")
    assert "set [msm] maven_repo in /srv/ops/prod.toml to a repository" in str(e.value)
    assert "hosts.toml" not in str(e.value)


def test_a_plain_http_maven_repo_is_warned_about_by_name(tmp_path):
    """A real HTTP server on loopback serves the tests' stand-in jars (tests/standin.py)."""
    import dataclasses
    import functools
    import http.server
    import threading

    import standin
    from tcsession import msmjars
    from tcsession.inventory import load_inventory

    repo = standin.write_repo(tmp_path / "repo", standin.standin_jars())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        settings = dataclasses.replace(load_inventory(ROOT / "hosts.toml").msm, maven_repo=url)
        jars, warnings = msmjars.prepare_jars(settings, 9, tmp_path / "msm.lock", tmp_path / "cache",
                                              inventory="/srv/ops/prod.toml")
    finally:
        server.shutdown()
        server.server_close()
    assert len(jars) == 3
    (w,) = [w for w in warnings if "plain HTTP" in w]
    assert w.startswith(f"/srv/ops/prod.toml: [msm] maven_repo {url} is plain HTTP") and "https://" in w


def test_an_unreadable_facts_answer_names_the_host_without_a_python_exception_name():
    """(#19.9) Shown in a status cell: the host and what to do, no "ValueError"."""
    from tcsession.facts import parse_facts

    text = (DATA / "deployed-tomcat1.txt").read_text()
    garbled = text.replace("@@file /etc/tomcat10/server.xml", "@@file /etc/tomcat10/server.xml\nnot base64!", 1)
    assert garbled != text
    with pytest.raises(TcsessionError) as e:
        parse_facts(garbled, "tomcat1")
    msg = str(e.value)
    assert msg.startswith("tomcat1: could not read its facts") and "Error" not in msg, msg


def test_msm_without_any_memcached_is_refused_before_the_install_naming_the_inventory():
    """(#19.8) [tomcat.*] memcached = false everywhere: refused before memcached or anything is
    installed, naming the inventory given, not hosts.toml."""
    from tcsession import lab, plan as planning
    from tcsession.inventory import parse_inventory

    text = lab.render_inventory("tcsref", "bookworm", 2, "10.153.0.0/24").replace(
        '[tomcat.tomcat1]\n', '[tomcat.tomcat1]\nmemcached = false\n').replace(
        '[tomcat.tomcat2]\n', '[tomcat.tomcat2]\nmemcached = false\n')
    inv = parse_inventory(text, Path("/srv/ops/prod.toml"))
    facts = {"nginx": facts_of("deployed-nginx"), "tomcat1": facts_of("bookworm-fresh-tomcat1"),
             "tomcat2": facts_of("bookworm-fresh-tomcat1")}
    with pytest.raises(TcsessionError, match=r"^/srv/ops/prod.toml: msm mode needs memcached on at least one Tomcat"):
        planning.plan(inv, facts, "msm")


def test_a_deploy_reads_an_old_msm_lock_says_so_and_writes_the_new_name(tmp_path, monkeypatch):
    """The lock beside prod.toml is now prod.msm.lock; a directory with only the msm.lock of
    before: the deploy's jar step reads it (its pins hold), says so on the operator's screen, and
    writes prod.msm.lock with every entry; msm.lock stays as it was."""
    import standin
    from tcsession import deploy as deploying
    from tcsession import msmjars
    from tcsession.facts import parse_facts
    from tcsession.inventory import load_inventory

    repo = standin.write_repo(tmp_path / "repo", standin.standin_jars())
    ops = tmp_path / "ops"
    ops.mkdir()
    (ops / "prod.toml").write_text((ROOT / "hosts.toml").read_text().replace(
        'maven_repo = "https://repo.maven.apache.org/maven2"', f'maven_repo = "{repo}"'))
    inv = load_inventory(ops / "prod.toml")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    msmjars.prepare_jars(inv.msm, 9, ops / "msm.lock")  # as tcsession wrote it before
    old = (ops / "msm.lock").read_text()
    fresh = parse_facts((DATA / "bookworm-fresh-tomcat1.txt").read_text())

    class UI:
        said: list[str] = []

        def line(self, *args, **kwargs):
            pass

        def say(self, text, style=""):
            self.said.append(text)

    jars = deploying.prepare_msm_jars(inv, {t.name: fresh for t in inv.tomcats},
                                      {t.name: ("tomcat9",) for t in inv.tomcats}, UI())
    assert set(jars) == {"tomcat1", "tomcat2"}
    assert UI.said == [f"  warning: {ops / 'msm.lock'} read: the lock file beside prod.toml is now prod.msm.lock "
                       "(named after the inventory); an msm deploy writes it there with every entry: commit "
                       "prod.msm.lock, then remove msm.lock"]
    new = (ops / "prod.msm.lock").read_text()
    assert (ops / "msm.lock").read_text() == old
    assert [l for l in new.splitlines() if not l.startswith("#")] == [l for l in old.splitlines() if not l.startswith("#")]
