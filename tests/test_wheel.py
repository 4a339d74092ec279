"""The wheel carries everything tcsession needs: built from the package's files alone (a copy of
pyproject.toml, README.md and tcsession/, nothing else of the checkout), installed into a clean
virtual environment outside the checkout, and run there as an operator would, in a directory and
HOME of their own.

Speed: the venv is made without pip and the wheel installed into it with this environment's pip
(`pip --python`, `--no-deps`); the dependencies (fabric, paramiko, invoke, lxml, rich,
cryptography: compiled for this same interpreter) come from this environment's site-packages
through a `.pth` file, so nothing is downloaded but the build backend (setuptools, in pip's
isolated build, as any build of the wheel does). This environment's editable install of the
checkout is not reachable from there (a .pth file's lines are only added to sys.path, the .pth
files in them are not run): the test checks that tcsession is imported from the clean venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from test_inventory import write_private_key

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_the_wheel_installs_into_a_clean_venv_and_runs_there(tmp_path):
    # 1. the wheel, from the package's own files
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "tcsession", src / "tcsession", ignore=shutil.ignore_patterns("__pycache__"))
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", src, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("tcsession-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("tcsession/templates/hosts.toml", "tcsession/templates/lab.toml", "tcsession/inventory.schema.json",
                    "tcsession/cli.py", "tcsession/lab.py", "tcsession/__main__.py"):
        assert shipped in names, shipped
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "tcsession = tcsession.cli:main" in entry

    # 2. a clean venv outside the checkout, the wheel installed, the dependencies reached by a .pth
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    py = venv / "bin" / "python"
    inst = run(sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel,
               cwd=tmp_path)
    assert inst.returncode == 0, inst.stderr
    purelib = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
                   .stdout.strip())
    (purelib / "tcsession-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    home, work = tmp_path / "home", tmp_path / "ops"
    (home / ".ssh").mkdir(parents=True)
    work.mkdir()
    write_private_key(home / ".ssh" / "id_ed25519")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    tcsession = venv / "bin" / "tcsession"
    where = run(py, "-c", "import tcsession; print(tcsession.__file__)", cwd=work, env=env)
    assert where.stdout.startswith(str(purelib / "tcsession")), where.stdout + where.stderr

    # 3. as an operator would
    v = run(tcsession, "--version", cwd=work, env=env)
    assert v.returncode == 0 and v.stdout == "tcsession 0.1.0\n", v.stdout + v.stderr
    i = run(tcsession, "init", cwd=work, env=env)
    assert i.returncode == 0 and (work / "hosts.toml").is_file(), i.stderr
    assert 'key = "~/.ssh/id_ed25519"' in (work / "hosts.toml").read_text()
    c = run(tcsession, "check", cwd=work, env=env)
    assert c.returncode == 0 and c.stdout.startswith("# hosts.toml: valid."), c.stdout + c.stderr
    s = run(tcsession, "check", "--schema", cwd=work, env=env)
    assert s.returncode == 0 and '"$id": "tcsession.inventory/1"' in s.stdout
    (work / "bad.toml").write_text('[cluster]\nmode = "mesh"\n[nginx.lb]\naddress = "lb.example"\n'
                                   '[tomcat.t1]\naddress = "192.0.2.11"\nhttp_port = 0\n')
    b = run(tcsession, "check", "-i", "bad.toml", cwd=work, env=env)
    assert b.returncode == 2 and b.stdout == ""
    lines = b.stderr.splitlines()
    assert lines[0] == "bad.toml: 5 problems", b.stderr
    for fragment in ('[cluster] mode = "mesh"', '[nginx.lb] address = "lb.example" is a host name',
                     "[tomcat.t1] http_port = 0 is not a port number", "[ssh] has no SSH key",
                     "needs at least two [tomcat.NAME] tables"):
        assert any(fragment in l for l in lines[1:]), (fragment, b.stderr)
    d = run(tcsession, "--dry", "deploy", cwd=work, env=env)
    assert d.returncode == 2 and d.stdout == ""
    assert d.stderr.startswith("tcsession: unknown option -R/--dry (an option of Invoke's that tcsession does not use)")
    m = run(py, "-m", "tcsession", "--version", cwd=work, env=env)
    assert m.returncode == 0 and m.stdout == "tcsession 0.1.0\n"
