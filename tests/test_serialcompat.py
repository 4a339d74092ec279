"""The session-compatibility gate's pure part (tcsession.serialcompat), against the JDK's own
`serialver` on real classes: Tomcat 10.1's and 9.0's jars (Debian's, from .cache/tools after
./dev.sh setup), the JDK's java.base, java.sql and java.desktop (its jmods), and class shapes compiled here
(tests/data/serialcompat: nested, inner, anonymous and local classes, enums with constant bodies,
records, bridge methods, classes with and without a static initializer, compiled for Java 17 and,
with the old synthetic accessors, for Java 8). One serialver JVM per class path: every class of a
run is named on one command line.

Then the comparison of two WARs: a declared value changed, a class without one that gains a field,
a field added under the same declared value (compatible), enums and records (never compared)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from jdkclasses import jdk_major, jmod_classes, jmods_dir, serializable_list
from tcsession import serialcompat as sc
from tcsession.errors import TcsessionError

ROOT = Path(__file__).resolve().parent.parent
JARS = ROOT / ".cache" / "tools" / "root" / "usr" / "share" / "java"
DATA = Path(__file__).resolve().parent / "data" / "serialcompat"
SERIALVER = shutil.which("serialver") or "/usr/bin/serialver"
JAVAC = shutil.which("javac") or "/usr/bin/javac"

# java.desktop: AWT and Swing, hundreds of Serializable classes without a declared value
JDK_MODULES = ("java.base", "java.sql", "java.desktop")
LINE = re.compile(r"^(\S+):\s+private static final long serialVersionUID = (-?\d+)L;$")
NOT = re.compile(r"^Class (\S+) is not Serializable\.$")


def need(path) -> None:
    if not Path(path).exists():
        pytest.skip(f"{path} is missing (./dev.sh setup; a JDK with serialver, javac and jmods)")


def serialver(classpath: list[Path], names: list[str]) -> dict[str, int | None]:
    """serialver's answer per class (None: not Serializable), one JVM for all of them."""
    out = subprocess.run([SERIALVER, "-J--add-modules=ALL-SYSTEM", "-classpath", ":".join(map(str, classpath)), *names],
                         capture_output=True, text=True, timeout=120)
    got = {}
    for line in out.stdout.splitlines() + out.stderr.splitlines():
        if m := LINE.match(line.strip()):
            got[m[1]] = int(m[2])
        elif m := NOT.match(line.strip()):
            got[m[1]] = None
    return got


def classes_of_jars(jars: list[Path]) -> dict[bytes, sc.Found]:
    out: dict[bytes, sc.Found] = {}
    for jar in jars:
        with zipfile.ZipFile(jar) as z:
            for n in z.namelist():
                if n.endswith(".class") and not n.startswith("META-INF/") and "module-info" not in n:
                    info = sc.parse_class(z.read(n))
                    out.setdefault(info.name, sc.Found(info, jar.name))
    return out


def compile_shapes(tmp: Path, release: str, package: str) -> Path:
    src = tmp / f"src-{package}"
    (src / package).mkdir(parents=True)
    for f in DATA.glob("*.java"):
        if release == "8" and f.name == "Records.java":
            continue
        (src / package / f.name).write_text(f.read_text().replace("PKG", package))
    out = tmp / f"classes-{package}"
    subprocess.run([JAVAC, "--release", release, "-nowarn", "-d", str(out), *map(str, (src / package).glob("*.java"))],
                   check=True, capture_output=True, timeout=120)
    return out


def classes_of_dir(d: Path) -> dict[bytes, sc.Found]:
    out = {}
    for f in d.rglob("*.class"):
        info = sc.parse_class(f.read_bytes())
        out[info.name] = sc.Found(info, "WEB-INF/classes")
    return out


def expected(classes: dict[bytes, sc.Found], h: sc.Hierarchy, names) -> dict[str, tuple[int | None, set]]:
    """Our answer per class (None: not Serializable) and what kind of class it is."""
    out = {}
    for n in names:
        c = classes[n].info
        ser = h.serializable(n)
        kinds = set()
        if ser:
            kinds.add("enum" if h.enum(n) else "record" if c.record else
                      "declared" if c.declared_suid()[0] else "computed")
            if b"$" in n:
                kinds.add("nested")
            if kinds & {"computed"} and not c.has_static_initializer:
                kinds.add("computed without a static initializer")
        out[c.java_name] = (h.suid(n) if ser else None, kinds)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(class path, our answers) per serialver run: Tomcat 10.1 with the shapes (Java 17), Tomcat 9
    with the shapes (Java 8), the JDK's java.base and java.sql."""
    for p in (SERIALVER, JAVAC, JARS / "tomcat10-catalina.jar", JARS / "tomcat9-catalina.jar"):
        need(p)
    jmods = jmods_dir()
    if jmods is None:
        pytest.skip("no JDK jmods (java.base.jmod)")
    tmp = tmp_path_factory.mktemp("serialver")
    runs = []
    for major, release, package in (("10", "17", "modern"), ("9", "8", "old8")):
        jars = sorted(p for p in JARS.glob(f"tomcat{major}-*.jar") if re.search(r"-\d+\.\d+\.\d+\.jar$", p.name)
                      and "-i18n-" not in p.name)
        shapes = compile_shapes(tmp, release, package)
        classes = classes_of_jars(jars) | classes_of_dir(shapes)
        h = sc.Hierarchy(classes)
        names = [n for n in classes if h.serializable(n) is not None]
        runs.append((f"Tomcat {major} jars + shapes (--release {release})", jars + [shapes],
                     expected(classes, h, names)))
    classes = {}
    for m in JDK_MODULES:
        for _, data in jmod_classes(jmods / f"{m}.jmod"):
            info = sc.parse_class(data)
            classes[info.name] = sc.Found(info, m)
    h = sc.Hierarchy(classes)
    # the JDK's exported API (java.*, javax.*): what serialver loads without --add-opens
    names = [n for n in classes if n.startswith((b"java/", b"javax/")) and h.serializable(n) is not None]
    runs.append((f"JDK {' + '.join(JDK_MODULES)}", [], expected(classes, h, names)))
    return runs


def test_computed_and_declared_values_equal_serialvers_on_real_classes(corpus):
    matched, mismatches, kinds = 0, [], {}
    for what, classpath, ours in corpus:
        theirs = serialver(classpath, sorted(ours))
        assert len(theirs) >= 0.95 * len(ours), f"{what}: serialver answered {len(theirs)} of {len(ours)}"
        for name, (value, tags) in ours.items():
            if name not in theirs:
                continue  # serialver could not load it (a dependency outside the corpus)
            if theirs[name] != value:
                mismatches.append(f"{what}: {name}: ours {value}, serialver {theirs[name]}")
                continue
            matched += 1
            for t in tags or {"not Serializable"}:
                kinds[t] = kinds.get(t, 0) + 1
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:20])
    print(f"\nserialver agreed on all {matched} classes: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    assert kinds["computed"] >= 500 and kinds["declared"] >= 500
    assert min(kinds["nested"], kinds["enum"], kinds["record"], kinds["computed without a static initializer"]) > 0


def test_the_corpus_covers_inner_classes_enums_records_and_classes_without_a_static_initializer(corpus):
    what, _, ours = corpus[0]
    shapes = {n: v for n, (v, _) in ours.items() if n.startswith("modern.")}
    assert shapes["modern.Records$Point"] == 0 and shapes["modern.Records$Named"] == 7
    assert shapes["modern.Shapes$Color"] == 0 and shapes["modern.Shapes$Color$1"] == 0
    assert shapes["modern.Shapes$Declared"] == 42
    for n in ("modern.Shapes$Inner", "modern.Shapes$1", "modern.Shapes$1Local", "modern.Shapes$Deeper$Deepest",
              "modern.Shapes$NoClinit", "modern.Shapes$WithClinit", "modern.Shapes$Bag", "modern.Shapes$Failure",
              "modern.Shapes$PrivateNested", "modern.Shapes$ImplMarked", "modern.Shapes$Marked"):
        assert shapes[n] not in (None, 0), n
    assert shapes["modern.Records$Plain"] is None
    # the old compiler's synthetic accessors (access$000) and this$0 fields are in the corpus
    old = corpus[1][2]
    assert "old8.Shapes$Inner" in old


def test_the_shipped_jdk_list_is_the_jdks():
    jmods = jmods_dir()
    if jmods is None:
        pytest.skip("no JDK jmods")
    if jdk_major(jmods) != 17:
        pytest.skip(f"the list was made from JDK 17 (Debian's, the Tomcats' Java); this JDK is {jdk_major(jmods)}")
    assert sorted(sc.JDK_SERIALIZABLE) == serializable_list(jmods), "regenerate: python tests/jdkclasses.py"


# --------------------------------------------------------------------------- comparing two versions

ONE = "private static final long serialVersionUID = 1L;"
# class -> (version 1's body, version 2's body); every class Serializable, in package shop
CLASSES = {
    "KeptValue": (ONE + " public int items;", ONE + " public int items; public long added;"),
    "ChangedValue": (ONE, ONE.replace("1L", "2L")),
    "Computed": ("public int items;", "public int items; public long added;"),
    "ComputedPrivate": ("public int items;", "public int items; private static int counter;"),
    "Added": ("public int items;", ONE + " public int items;"),
    "Removed": (ONE + " public int items;", "public int items;"),
}
OTHERS = {  # never compared by value: enums (matched by name), records (not matched), interfaces; a lib class
    "shop/Size.java": ("package shop; public enum Size { S, M }", "package shop; public enum Size { S, M, L; int x; }"),
    "shop/Line.java": ("package shop; public record Line(int n) implements java.io.Serializable {}",
                       "package shop; public record Line(int n, long m) implements java.io.Serializable {}"),
    "shop/Marked.java": ("package shop; public interface Marked extends java.io.Serializable { }",
                         "package shop; public interface Marked extends java.io.Serializable { void m(); }"),
    "shop/lib/Token.java": ("package shop.lib; public class Token extends java.util.HashMap<String, String> {}",
                            "package shop.lib; public class Token extends java.util.HashMap<String, String> { public int n; }"),
}


def build_war(tmp: Path, name: str, sources: dict[str, str], lib_package: str = "shop/lib/") -> bytes:
    """A WAR of the classes compiled from `sources` (one javac): those under `lib_package` in
    WEB-INF/lib/shoplib.jar, the others in WEB-INF/classes."""
    src, out = tmp / f"{name}-src", tmp / f"{name}-out"
    for path, text in sources.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(text)
    subprocess.run([JAVAC, "--release", "17", "-d", str(out), *map(str, src.rglob("*.java"))],
                   check=True, capture_output=True, timeout=120)
    compiled = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.class")}
    buf, jar = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, zipfile.ZipFile(jar, "w") as j:
        z.writestr("WEB-INF/web.xml", "<web-app><distributable/></web-app>")
        for rel, data in compiled.items():
            if rel.startswith(lib_package):
                j.writestr(rel, data)
            else:
                z.writestr("WEB-INF/classes/" + rel, data)
    if any(rel.startswith(lib_package) for rel in compiled):
        with zipfile.ZipFile(buf, "a") as z:
            z.writestr("WEB-INF/lib/shoplib.jar", jar.getvalue())
    return buf.getvalue()


ONLY = {  # classes one version has: (version, source)
    "shop/Gone.java": (1, "package shop; public class Gone implements java.io.Serializable { public int n; }"),
    "shop/Extra.java": (2, "package shop; public class Extra extends java.util.ArrayList<String> { public int n; }"),
    "shop/Helper.java": (2, "package shop; public class Helper { public int n; }"),  # never in a session
    "shop/Tagged.java": (2, "package shop; public interface Tagged extends java.io.Serializable { }"),
}


def version(n: int) -> dict[str, str]:
    out = {f"shop/{c}.java": f"package shop; public class {c} implements java.io.Serializable {{ {bodies[n - 1]} }}"
           for c, bodies in CLASSES.items()}
    return out | {path: texts[n - 1] for path, texts in OTHERS.items()} | {
        path: text for path, (v, text) in ONLY.items() if v == n}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """Version 1 against version 2: the differences by class name, and the comparison."""
    need(JAVAC)
    tmp = tmp_path_factory.mktemp("wars")
    v1, v2 = build_war(tmp, "v1", version(1)), build_war(tmp, "v2", version(2))
    c = sc.compare_wars(v1, v2, "shop.war")
    assert sc.compare_wars(v1, v1, "shop.war").differences == ()
    return {d.name: d for d in c.differences}, c


def test_a_field_added_under_the_same_declared_value_is_compatible(comparison):
    diffs, c = comparison
    assert "shop.KeptValue" not in diffs
    assert c.compared == len(CLASSES) + len(OTHERS) - 1  # the interface is not compared


def test_a_changed_declared_value_is_named_with_both_values(comparison):
    d = comparison[0]["shop.ChangedValue"]
    assert (d.old, d.new) == (1, 2)
    assert d.line() == "shop.ChangedValue (WEB-INF/classes): serialVersionUID 1L -> 2L: the declared value changed"


def test_an_undeclared_class_that_gains_a_field_says_which(comparison):
    d = comparison[0]["shop.Computed"]
    assert d.old != d.new and "computed (none declared)" in d.why and "field(s) added: added" in d.why
    assert "shop.ComputedPrivate" not in comparison[0]  # a private static field is not part of the value


def test_a_declaration_added_with_another_value_and_one_removed(comparison):
    d = comparison[0]["shop.Added"]
    assert d.new == 1 and "declaration was added" in d.why
    d = comparison[0]["shop.Removed"]
    assert d.old == 1 and "declaration was removed" in d.why


def test_a_library_class_serializable_through_the_jdk_is_judged_in_its_jar(comparison):
    d = comparison[0]["shop.lib.Token"]
    assert d.old_where == "WEB-INF/lib/shoplib.jar" and "field(s) added: n" in d.why


def test_the_serializable_classes_only_one_version_has_are_listed(comparison):
    """A node on the other version cannot load them (ClassNotFoundException): what a
    sessions = "drop" rollout expects in the logs while versions mix."""
    assert comparison[1].one_sided == ("shop.Extra", "shop.Gone")


def test_enums_records_and_interfaces_are_never_compared(comparison):
    diffs, _ = comparison
    assert set(diffs) == {"shop.ChangedValue", "shop.Computed", "shop.Added", "shop.Removed", "shop.lib.Token"}


def test_a_broken_class_file_is_one_line_naming_the_entry():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("WEB-INF/classes/shop/Cart.class", b"\xca\xfe\xba\xbe\x00\x00\x00\x3d\x00\x09\x07")
    with pytest.raises(TcsessionError, match=r"^shop.war!WEB-INF/classes/shop/Cart.class: truncated or malformed"):
        sc.war_classes(buf.getvalue(), "shop.war")


@pytest.mark.measure
def test_measured_time_to_compare_a_large_war(tmp_path):
    """How long the gate takes on this machine for a WAR of Tomcat 10.1's jars in WEB-INF/lib
    (about 3000 classes), against a copy whose one jar was rebuilt: printed, not asserted."""
    import time

    need(JARS / "tomcat10-catalina.jar")
    jars = sorted(p for p in JARS.glob("tomcat10-*.jar") if re.search(r"-\d+\.\d+\.\d+\.jar$", p.name))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("WEB-INF/web.xml", "<web-app><distributable/></web-app>")
        for j in jars:
            z.writestr(f"WEB-INF/lib/{j.name}", j.read_bytes())
    war = buf.getvalue()
    started = time.monotonic()
    c = sc.compare_wars(war, war, "big.war")
    seconds = time.monotonic() - started
    print(f"\n{len(war) / 1e6:.1f} MB WAR, {len(jars)} jars: {c.compared} Serializable classes compared, "
          f"{c.unknown} not judged, in {seconds:.2f} s")
    assert c.differences == ()
