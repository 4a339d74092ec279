"""Session compatibility between two versions of an application: the serialVersionUID of every
Serializable class they share, from their class files (pure: bytes in, findings out).

A session written by one version is read by the other during a rolling upgrade (DeltaManager's
state transfer and replication, BackupManager, memcached-session-manager). Java refuses to read an
object whose class's serialVersionUID differs (`InvalidClassException: local class incompatible`).
The value is the declared `static final long serialVersionUID`, or, when there is none, the one
computed by the Java Object Serialization Specification §4.6 (ObjectStreamClass.computeDefaultSUID):
a SHA-1 over the class's name, modifiers, interfaces, fields, static initializer presence,
constructors and methods. Enums are always 0 (matched by name); records are 0 unless declared and
their value is not matched on read (spec §1.13), so neither is compared; nor are interfaces (a
stream carries the descriptors of its objects' classes and their superclasses, never of an
interface).

- :func:`parse_class`: a class file into :class:`ClassInfo` (constant pool, fields, methods,
  interfaces, the InnerClasses modifiers, the Record attribute).
- :func:`serial_version_uid`: the declared value, else the computed one.
- :func:`war_classes` / :func:`compare_wars`: every class of a WAR (WEB-INF/classes and the jars of
  WEB-INF/lib), and the shared Serializable classes whose value differs, with the reason.

Serializable "as far as the WAR and the JDK tell": a class is Serializable when it or a superclass
or interface (found in the WAR) implements java.io.Serializable, or extends one of the JDK's
Serializable classes (:data:`JDK_SERIALIZABLE`: the non-final Serializable classes and the
interfaces of java.base and java.sql, JDK 17, checked against the JDK's jmods by the tests). A class whose ancestry leaves the WAR for an
unknown class (a container's or a provided library's) is not judged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
import zipfile
from pathlib import Path

from tcsession.errors import TcsessionError

# java.lang.reflect.Modifier
PUBLIC, PRIVATE, PROTECTED, STATIC, FINAL = 0x1, 0x2, 0x4, 0x8, 0x10
SYNCHRONIZED, VOLATILE, TRANSIENT, NATIVE = 0x20, 0x40, 0x80, 0x100
INTERFACE, ABSTRACT, STRICT = 0x200, 0x400, 0x800
ACC_ENUM = 0x4000

CLASS_MASK = PUBLIC | FINAL | INTERFACE | ABSTRACT
FIELD_MASK = PUBLIC | PRIVATE | PROTECTED | STATIC | FINAL | VOLATILE | TRANSIENT
METHOD_MASK = PUBLIC | PRIVATE | PROTECTED | STATIC | FINAL | SYNCHRONIZED | NATIVE | ABSTRACT | STRICT


class ClassFormatError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Member:
    name: bytes  # modified UTF-8, as in the class file
    access: int
    descriptor: bytes  # with "/" as in the class file
    constant: object = None  # a field's ConstantValue (int, float, str), else None


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    name: bytes  # internal form: shop/Cart$Item
    access: int  # the class file's access_flags
    inner_access: int | None  # the InnerClasses entry's flags for this class (what getModifiers() returns)
    super_name: bytes | None
    interfaces: tuple[bytes, ...]
    fields: tuple[Member, ...]
    methods: tuple[Member, ...]
    record: bool  # has the Record attribute

    @property
    def java_name(self) -> str:
        return _text(self.name.replace(b"/", b"."))

    @property
    def modifiers(self) -> int:
        """Class.getModifiers(): the inner-class flags for a nested class, else the class's own."""
        return (self.inner_access if self.inner_access is not None else self.access) & 0xFFFF & ~0x20

    @property
    def has_static_initializer(self) -> bool:
        return any(m.name == b"<clinit>" and m.descriptor == b"()V" for m in self.methods)

    def declared_suid(self) -> tuple[bool, int | None]:
        """(declared, value): a `static final long serialVersionUID`; value None when it is not
        a compile-time constant (computed in a static initializer)."""
        for f in self.fields:
            if f.name == b"serialVersionUID" and f.descriptor == b"J" and f.access & STATIC and f.access & FINAL:
                return True, f.constant if isinstance(f.constant, int) else None
        return False, None


def _text(b: bytes) -> str:
    """Modified UTF-8 to str (NUL as C0 80, supplementary characters as surrogate pairs)."""
    try:
        return b.replace(b"\xc0\x80", b"\x00").decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return b.decode("utf-8", "replace")


def _java_order(b: bytes) -> bytes:
    """A key sorting like Java's String.compareTo (UTF-16 code units)."""
    return _text(b).encode("utf-16-be", "surrogatepass")


def parse_class(data: bytes) -> ClassInfo:
    """A class file's name, flags, super class, interfaces, fields (with ConstantValue), methods,
    InnerClasses flags for itself and whether it has a Record attribute."""
    try:
        return _parse(memoryview(data))
    except (struct.error, IndexError, KeyError, TypeError) as e:
        raise ClassFormatError(f"truncated or malformed class file ({e})") from None


def _parse(d: memoryview) -> ClassInfo:
    if bytes(d[:4]) != b"\xca\xfe\xba\xbe":
        raise ClassFormatError("not a class file (no CAFEBABE magic)")
    count = struct.unpack_from(">H", d, 8)[0]
    pos = 10
    utf8: dict[int, bytes] = {}
    classes: dict[int, int] = {}
    values: dict[int, object] = {}
    i = 1
    while i < count:
        tag = d[pos]
        if tag == 1:
            n = struct.unpack_from(">H", d, pos + 1)[0]
            utf8[i] = bytes(d[pos + 3:pos + 3 + n])
            pos += 3 + n
        elif tag == 3:
            values[i] = struct.unpack_from(">i", d, pos + 1)[0]
            pos += 5
        elif tag == 4:
            values[i] = struct.unpack_from(">f", d, pos + 1)[0]
            pos += 5
        elif tag == 5:
            values[i] = struct.unpack_from(">q", d, pos + 1)[0]
            pos += 9
            i += 1
        elif tag == 6:
            values[i] = struct.unpack_from(">d", d, pos + 1)[0]
            pos += 9
            i += 1
        elif tag in (7, 8, 16, 19, 20):
            ref = struct.unpack_from(">H", d, pos + 1)[0]
            if tag == 7:
                classes[i] = ref
            elif tag == 8:
                values[i] = ("string", ref)
            pos += 3
        elif tag in (9, 10, 11, 12, 17, 18):
            pos += 5
        elif tag == 15:
            pos += 4
        else:
            raise ClassFormatError(f"unknown constant pool tag {tag} at entry {i}")
        i += 1

    def cls(index: int) -> bytes | None:
        return utf8[classes[index]] if index else None

    access, this, sup, n_if = struct.unpack_from(">HHHH", d, pos)
    pos += 8
    name = cls(this)
    interfaces = tuple(cls(struct.unpack_from(">H", d, pos + 2 * k)[0]) for k in range(n_if))
    pos += 2 * n_if

    def members(pos: int, fields: bool) -> tuple[tuple[Member, ...], int]:
        n = struct.unpack_from(">H", d, pos)[0]
        pos += 2
        out = []
        for _ in range(n):
            acc, ni, di, na = struct.unpack_from(">HHHH", d, pos)
            pos += 8
            constant = None
            for _ in range(na):
                an, length = struct.unpack_from(">HI", d, pos)
                if fields and utf8.get(an) == b"ConstantValue":
                    v = values.get(struct.unpack_from(">H", d, pos + 6)[0])
                    constant = _text(utf8[v[1]]) if isinstance(v, tuple) else v
                pos += 6 + length
            out.append(Member(utf8[ni], acc, utf8[di], constant))
        return tuple(out), pos

    fields, pos = members(pos, True)
    methods, pos = members(pos, False)
    inner_access = None
    record = False
    n_attr = struct.unpack_from(">H", d, pos)[0]
    pos += 2
    for _ in range(n_attr):
        an, length = struct.unpack_from(">HI", d, pos)
        body = pos + 6
        if utf8.get(an) == b"InnerClasses":
            for k in range(struct.unpack_from(">H", d, body)[0]):
                inner, _outer, _name, flags = struct.unpack_from(">HHHH", d, body + 2 + 8 * k)
                if inner and cls(inner) == name:
                    inner_access = flags
        elif utf8.get(an) == b"Record":
            record = True
        pos = body + length
    return ClassInfo(name, access, inner_access, cls(sup), interfaces, fields, methods, record)


def _write_utf(out: io.BytesIO, b: bytes) -> None:
    out.write(struct.pack(">H", len(b)) + b)


def computed_suid(c: ClassInfo) -> int:
    """ObjectStreamClass.computeDefaultSUID (Java Object Serialization Specification §4.6)."""
    out = io.BytesIO()
    _write_utf(out, c.name.replace(b"/", b"."))
    mods = c.modifiers & CLASS_MASK
    declared_methods = [m for m in c.methods if m.name not in (b"<init>", b"<clinit>")]
    if mods & INTERFACE:  # compilers disagree on ABSTRACT for interfaces: made consistent
        mods = (mods | ABSTRACT) if declared_methods else (mods & ~ABSTRACT)
    out.write(struct.pack(">i", mods))
    for name in sorted((i.replace(b"/", b".") for i in c.interfaces), key=_java_order):
        _write_utf(out, name)
    for f in sorted(c.fields, key=lambda f: _java_order(f.name)):
        m = f.access & FIELD_MASK
        if not m & PRIVATE or not m & (STATIC | TRANSIENT):
            _write_utf(out, f.name)
            out.write(struct.pack(">i", m))
            _write_utf(out, f.descriptor)
    if c.has_static_initializer:
        _write_utf(out, b"<clinit>")
        out.write(struct.pack(">i", STATIC))
        _write_utf(out, b"()V")
    for m in sorted((m for m in c.methods if m.name == b"<init>"), key=lambda m: _java_order(m.descriptor)):
        mm = m.access & METHOD_MASK
        if not mm & PRIVATE:
            _write_utf(out, b"<init>")
            out.write(struct.pack(">i", mm))
            _write_utf(out, m.descriptor.replace(b"/", b"."))
    for m in sorted(declared_methods, key=lambda m: (_java_order(m.name), _java_order(m.descriptor))):
        mm = m.access & METHOD_MASK
        if not mm & PRIVATE:
            _write_utf(out, m.name)
            out.write(struct.pack(">i", mm))
            _write_utf(out, m.descriptor.replace(b"/", b"."))
    digest = hashlib.sha1(out.getvalue()).digest()
    return int.from_bytes(digest[:8], "little", signed=True)


def serial_version_uid(c: ClassInfo, enum: bool = False) -> int | None:
    """What serialver prints: 0 for an enum (and a record without a declared value), the declared
    value, else the computed one; None when declared but not a constant."""
    if enum:
        return 0
    declared, value = c.declared_suid()
    if declared:
        return value
    if c.record:
        return 0
    return computed_suid(c)


# --------------------------------------------------------------------------- the JDK's side

def _load_jdk_serializable() -> frozenset[str]:
    path = Path(__file__).with_name("jdk_serializable.txt")
    return frozenset(l.strip() for l in path.read_text().splitlines() if l.strip() and not l.startswith("#"))


JDK_SERIALIZABLE = _load_jdk_serializable()
JDK_PACKAGES = (b"java/", b"jdk/", b"sun/")  # the JDK's own (javax.* may be a container's: unknown)


# --------------------------------------------------------------------------- a WAR's classes

@dataclasses.dataclass(frozen=True)
class Found:
    info: ClassInfo
    where: str  # "WEB-INF/classes" or "WEB-INF/lib/x.jar"


def war_classes(data: bytes, source: str) -> dict[bytes, Found]:
    """Internal class name -> its class, from WEB-INF/classes and the jars in WEB-INF/lib
    (WEB-INF/classes first: Tomcat's web application class loader order)."""
    out: dict[bytes, Found] = {}
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise TcsessionError(f"{source}: not a readable WAR ({e})") from None
    with z:
        jars = []
        for n in z.namelist():
            if n.startswith("WEB-INF/classes/") and n.endswith(".class"):
                _add(out, z.read(n), "WEB-INF/classes", f"{source}!{n}")
            elif n.startswith("WEB-INF/lib/") and n.endswith(".jar") and n.count("/") == 2:
                jars.append(n)
        for n in sorted(jars):
            try:
                with zipfile.ZipFile(io.BytesIO(z.read(n))) as jar:
                    for m in jar.namelist():
                        if m.endswith(".class") and not m.startswith("META-INF/"):
                            _add(out, jar.read(m), n, f"{source}!{n}!{m}")
            except zipfile.BadZipFile as e:
                raise TcsessionError(f"{source}: {n} is not a readable jar ({e}); build the WAR again "
                                     "(tcsession changed nothing)") from None
    return out


def _add(out: dict, data: bytes, where: str, source: str) -> None:
    if data[:4] != b"\xca\xfe\xba\xbe":
        return
    try:
        info = parse_class(data)
    except ClassFormatError as e:
        raise TcsessionError(f"{source}: {e}; build the WAR again (tcsession changed nothing)") from None
    if info.name in (b"module-info", b"package-info") or info.name.endswith((b"/module-info", b"/package-info")):
        return
    out.setdefault(info.name, Found(info, where))


class Hierarchy:
    """Serializable and enum questions about the classes of one WAR, answered from the WAR and
    the JDK's list (None: not known, the ancestry leaves both)."""

    def __init__(self, classes: dict[bytes, Found]):
        self.classes = classes
        self._memo: dict[bytes, bool | None] = {}

    def serializable(self, name: bytes) -> bool | None:
        if name in self._memo:
            return self._memo[name]
        self._memo[name] = None  # cycles (malformed input) end as unknown
        self._memo[name] = result = self._serializable(name)
        return result

    def _serializable(self, name: bytes) -> bool | None:
        if name == b"java/io/Serializable" or _text(name).replace("/", ".") in JDK_SERIALIZABLE:
            return True
        found = self.classes.get(name)
        if found is None:
            if name == b"java/lang/Object" or name.startswith(JDK_PACKAGES):
                return False  # a JDK type that is not on the list: not Serializable (or final)
            return None
        c = found.info
        unknown = False
        for parent in (c.super_name, *c.interfaces):
            if parent is None:
                continue
            s = self.serializable(parent)
            if s:
                return True
            unknown = unknown or s is None
        return None if unknown else False

    def enum(self, name: bytes) -> bool:
        seen = set()
        while name and name not in seen:
            if name == b"java/lang/Enum":
                return True
            seen.add(name)
            found = self.classes.get(name)
            name = found.info.super_name if found else None
        return False

    def suid(self, name: bytes) -> int | None:
        return serial_version_uid(self.classes[name].info, self.enum(name))


@dataclasses.dataclass(frozen=True)
class Difference:
    """A class shared by both versions whose serialized form the other version cannot read."""

    name: str  # java name
    old_where: str
    new_where: str
    old: int | None  # None: declared but not a constant, or no longer Serializable
    new: int | None
    why: str

    def line(self) -> str:
        where = self.new_where if self.old_where == self.new_where else f"{self.old_where} -> {self.new_where}"
        val = lambda v: "?" if v is None else f"{v}L"  # noqa: E731
        return f"{self.name} ({where}): serialVersionUID {val(self.old)} -> {val(self.new)}: {self.why}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    differences: tuple[Difference, ...]
    compared: int  # Serializable classes present in both and compared
    unknown: int  # shared classes whose ancestry leaves the WAR and the JDK's list (not judged)
    # Serializable classes only one version has: the other cannot load them (ClassNotFoundException)
    one_sided: tuple[str, ...] = ()


def _declared_desc(c: ClassInfo) -> str:
    declared, value = c.declared_suid()
    return "declared" if declared else "computed"


def _why(old: ClassInfo, new: ClassInfo) -> str:
    od, _ = old.declared_suid()
    nd, _ = new.declared_suid()
    if od and nd:
        return "the declared value changed"
    if od and not nd:
        return "the declaration was removed (the computed value differs from the declared one)"
    if nd and not od:
        return "a declaration was added with another value than the computed one the old version used"
    return "computed (none declared) and the class changed: " + _shape_change(old, new)


def _shape_change(old: ClassInfo, new: ClassInfo) -> str:
    parts = []

    def fields(c):
        return {_text(f.name): f for f in c.fields
                if not (f.access & PRIVATE and f.access & (STATIC | TRANSIENT))}

    def methods(c):
        return {f"{_text(m.name)}{_text(m.descriptor)}": m for m in c.methods
                if not m.access & PRIVATE and m.name != b"<clinit>"}

    of, nf = fields(old), fields(new)
    om, nm = methods(old), methods(new)
    if nf.keys() - of.keys():
        parts.append("field(s) added: " + ", ".join(sorted(nf.keys() - of.keys())))
    if of.keys() - nf.keys():
        parts.append("field(s) removed: " + ", ".join(sorted(of.keys() - nf.keys())))
    changed = [k for k in of.keys() & nf.keys()
               if (of[k].access & FIELD_MASK, of[k].descriptor) != (nf[k].access & FIELD_MASK, nf[k].descriptor)]
    if changed:
        parts.append("field(s) changed type or modifiers: " + ", ".join(sorted(changed)))
    if nm.keys() - om.keys():
        parts.append("method(s) or constructor(s) added: " + ", ".join(sorted(nm.keys() - om.keys())[:5]))
    if om.keys() - nm.keys():
        parts.append("method(s) or constructor(s) removed: " + ", ".join(sorted(om.keys() - nm.keys())[:5]))
    changed = [k for k in om.keys() & nm.keys() if om[k].access & METHOD_MASK != nm[k].access & METHOD_MASK]
    if changed:
        parts.append("method modifiers changed: " + ", ".join(sorted(changed)[:5]))
    if sorted(old.interfaces) != sorted(new.interfaces):
        parts.append("interfaces changed")
    if old.modifiers & CLASS_MASK != new.modifiers & CLASS_MASK:
        parts.append("class modifiers changed")
    if old.has_static_initializer != new.has_static_initializer:
        parts.append("static initializer " + ("added" if new.has_static_initializer else "removed"))
    return "; ".join(parts) or "its members changed"


def compare_classes(old: dict[bytes, Found], new: dict[bytes, Found]) -> Comparison:
    """The shared Serializable classes whose serialVersionUID differs between two versions."""
    ho, hn = Hierarchy(old), Hierarchy(new)
    diffs, compared, unknown = [], 0, 0
    for name in sorted(old.keys() & new.keys()):
        so, sn = ho.serializable(name), hn.serializable(name)
        if not so:  # the old version never wrote it into a session (or we cannot tell)
            unknown += so is None
            continue
        o, n = old[name], new[name]
        if o.info.access & INTERFACE and n.info.access & INTERFACE:
            continue  # a stream names the classes of its objects, never an interface's value
        if ho.enum(name) or hn.enum(name):
            compared += 1  # enums are matched by constant name, never by serialVersionUID
            continue
        if o.info.record and n.info.record:
            compared += 1  # records: the value is not matched on read (spec §1.13)
            continue
        if sn is None:
            unknown += 1
            continue
        compared += 1
        java = o.info.java_name
        if not sn:
            diffs.append(Difference(java, o.where, n.where, ho.suid(name), None,
                                    "no longer Serializable in the new version"))
            continue
        vo, vn = ho.suid(name), hn.suid(name)
        if vo is None or vn is None:
            if vo != vn or o.info.declared_suid() != n.info.declared_suid():
                diffs.append(Difference(java, o.where, n.where, vo, vn,
                                        "declared but computed at run time (not a constant): cannot compare"))
            continue
        if vo != vn:
            diffs.append(Difference(java, o.where, n.where, vo, vn, _why(o.info, n.info)))
    one_sided = sorted(
        found.info.java_name for side, h, other in ((old, ho, new), (new, hn, old))
        for name, found in side.items() if name not in other and h.serializable(name)
        and not found.info.access & INTERFACE)
    return Comparison(tuple(diffs), compared, unknown, tuple(one_sided))


def compare_wars(old: bytes, new: bytes, source: str) -> Comparison:
    return compare_classes(war_classes(old, f"{source} (the version the nodes run)"),
                           war_classes(new, source))
