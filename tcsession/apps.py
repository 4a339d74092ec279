"""The operator's applications ([app.NAME]): each WAR checked, and converted where asked, on this
machine before any host changes; where they go on a Tomcat; their Context for msm.

Side effects on the control machine only (reading the WAR, `javax2jakarta` and its cache), so every
refusal stops the deploy before any host is changed. One line per problem, naming the WAR and the fix.

- :func:`check_war`: a zip with ``WEB-INF/web.xml`` (or a Servlet 3 application without one:
  ``WEB-INF/classes``, ``WEB-INF/lib`` or pages); in delta mode its web.xml must have
  ``<distributable/>`` (without it DeltaManager silently gives the context a local manager: its
  sessions would not replicate).
- :func:`prepare_app`: the bytes one Tomcat major gets: the servlet namespace of every class (and
  of every jar in ``WEB-INF/lib``, by the class-file check that guards the MSM jars) and of every
  JSP's imports must match that Tomcat (javax up to 9, jakarta from 10); a javax WAR onto Tomcat 10+
  is converted with Apache's migration tool (``jakarta = "convert"``, cached by the input's sha256
  so later deploys copy the same bytes) or refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import tempfile
import zipfile
from pathlib import Path

from lxml import etree

from tcsession import maven, msm, msmjars
from tcsession.errors import TcsessionError
from tcsession.inventory import App
from tcsession.tomcat import Layout


@dataclasses.dataclass(frozen=True)
class AppWar:
    """One application as one Tomcat major gets it."""

    app: App
    data: bytes
    converted: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def war_path(layout: Layout, app: App) -> str:
    return f"{layout.base}/webapps/{app.base_name}.war"


def context_path(layout: Layout, app: App) -> str:
    """The context descriptor tcsession owns for the application (msm, scope app): Tomcat reads
    conf/<Engine>/<Host>/<name>.xml; Debian keeps conf in /etc/tomcatN."""
    return f"{layout.conf}/Catalina/localhost/{app.base_name}.xml"


def expanded_dir(layout: Layout, app: App) -> str:
    return f"{layout.base}/webapps/{app.base_name}"


_JSP_NS = re.compile(rb"\b(javax|jakarta)\.servlet\.")


def _zip(data: bytes, source: str) -> zipfile.ZipFile:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise TcsessionError(f"{source}: not a WAR (not a readable zip file: {e}); build it again "
                             "(e.g. mvn package) and point war = at the .war (tcsession changed nothing)") from None
    if bad is not None:
        raise TcsessionError(f"{source}: damaged WAR ({bad} fails its CRC); build it again (tcsession changed nothing)")
    return z


def web_xml_distributable(data: bytes, source: str) -> bool:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise TcsessionError(f"{source}: WEB-INF/web.xml is not well-formed XML ({' '.join(str(e).split())}); "
                             "fix it and build the WAR again (tcsession changed nothing)") from None
    if etree.QName(root).localname != "web-app":
        raise TcsessionError(f"{source}: WEB-INF/web.xml has root <{etree.QName(root).localname}>, expected "
                             "<web-app>; fix it (tcsession changed nothing)")
    ns = etree.QName(root).namespace
    return any(isinstance(c.tag, str) and etree.QName(c) == etree.QName(ns, "distributable") if ns
               else c.tag == "distributable" for c in root)


def check_war(app: App, data: bytes, mode_name: str) -> None:
    """Is it a WAR, and (delta mode) does its web.xml say it is distributable?"""
    source = f"[app.{app.name}] war {app.war}"
    z = _zip(data, source)
    names = z.namelist()
    web_xml = "WEB-INF/web.xml" in names
    servlet3 = any(n.startswith(("WEB-INF/classes/", "WEB-INF/lib/")) or n.endswith((".jsp", ".jspx", ".html"))
                   for n in names)
    if not web_xml and not servlet3:
        raise TcsessionError(f"{source}: not a WAR (no WEB-INF/web.xml, no WEB-INF/classes or lib, no pages); "
                             "point war = at the application's .war (tcsession changed nothing)")
    if mode_name == "delta":
        if not web_xml:
            raise TcsessionError(
                f"{source}: has no WEB-INF/web.xml, so no <distributable/>: Tomcat's cluster would give it a "
                "local session manager and its sessions would not replicate; add a WEB-INF/web.xml with "
                "<distributable/> (tcsession changed nothing)")
        if not web_xml_distributable(z.read("WEB-INF/web.xml"), source):
            raise TcsessionError(
                f"{source}: WEB-INF/web.xml has no <distributable/>: Tomcat's cluster would give it a local "
                "session manager and its sessions would not replicate; add <distributable/> to <web-app> and "
                "build the WAR again (its session attributes must be Serializable) (tcsession changed nothing)")


def war_namespaces(data: bytes, source: str) -> set[str]:
    """Which servlet API the WAR refers to: its classes and WEB-INF/lib jars (msmjars'
    class-file check) and its JSPs' source (a JSP compiles on the Tomcat it is deployed on)."""
    found = set(msmjars.servlet_namespaces(data, source))
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if info.filename.startswith("WEB-INF/lib/") and info.filename.endswith(".jar"):
                found |= msmjars.servlet_namespaces(z.read(info), f"{source}!{info.filename}")
            elif info.filename.endswith((".jsp", ".jspx", ".jspf", ".tag")):
                found |= {m.decode() for m in _JSP_NS.findall(z.read(info))}
    return found


def convert_war(data: bytes, name: str, cache_dir: Path) -> bytes:
    """The jakarta conversion of a WAR, cached by the input's sha256 (stable bytes)."""
    out = cache_dir / "jakarta-wars" / hashlib.sha256(data).hexdigest() / name
    if out.is_file():
        return out.read_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        src = Path(tmp) / ("in-" + name)
        src.write_bytes(data)
        return msmjars.convert_into(src, out, name)


def prepare_app(app: App, mode_name: str, tomcat_major: int, cache_dir: Path | None = None) -> AppWar:
    """The WAR a Tomcat of `tomcat_major` gets, checked (and converted where asked)."""
    source = f"[app.{app.name}] war {app.war}"
    try:
        data = app.war.read_bytes()
    except OSError as e:
        raise TcsessionError(f"{source}: cannot read it ({e.strerror}); check the path (tcsession changed nothing)") from None
    check_war(app, data, mode_name)
    jakarta = msm.needs_jakarta(tomcat_major)
    spaces = war_namespaces(data, source)
    converted = False
    if jakarta and "javax" in spaces:
        if app.jakarta != "convert":
            raise TcsessionError(
                f"{source}: refers to javax.servlet classes, which Tomcat {tomcat_major} does not have (it is "
                f'jakarta.servlet), and jakarta = "refuse"; build a jakarta version of the application, or set '
                f'jakarta = "convert" in [app.{app.name}] (Apache\'s javax2jakarta) (tcsession changed nothing)')
        data = convert_war(data, f"{app.base_name}.war", Path(cache_dir) if cache_dir else maven.default_cache_dir())
        converted = True
        spaces = war_namespaces(data, source + " (converted)")
    wrong = "javax" if jakarta else "jakarta"
    if wrong in spaces:
        fix = ("check the converted WAR" if jakarta else
               "build it for Servlet 4 (javax.servlet), or run these hosts on Tomcat 10+")
        raise TcsessionError(f"{source}{' (converted)' if converted else ''}: refers to {wrong}.servlet classes, "
                             f"which Tomcat {tomcat_major} does not have; refusing to deploy it ({fix}; "
                             "tcsession changed nothing)")
    return AppWar(app, data, converted)


def prepare_apps(apps, mode_name: str, majors: dict[str, int], cache_dir: Path | None = None,
                 ) -> dict[str, tuple[AppWar, ...]]:
    """Host name -> its applications' WARs, for every host whose Tomcat major is known."""
    by_major: dict[int, tuple[AppWar, ...]] = {}
    out = {}
    for host, major in majors.items():
        if major not in by_major:
            by_major[major] = tuple(prepare_app(a, mode_name, major, cache_dir) for a in apps)
        out[host] = by_major[major]
    return out


def is_app_file(path: str) -> bool:
    """A file of an application (its WAR in webapps, its context descriptor): written only while
    its Tomcat is stopped and out of service (Tomcat's autoDeploy would redeploy it at once, on
    every node at the same time)."""
    return (("/webapps/" in path and path.endswith(".war") and path.count("/", path.index("/webapps/") + 9) == 0)
            or ("/Catalina/localhost/" in path and path.endswith(".xml")))


def watched_by_tomcat(layout: Layout, path: str) -> bool:
    """A file a running Tomcat watches and acts on at once (autoDeploy redeploys or reloads the
    context: 404s while it does, on every node together if written everywhere at once): an
    application's files, and the test application's web.xml and context descriptors. Written only
    inside the node's drained restart, while it is stopped."""
    return is_app_file(path) or path in (layout.web_xml, layout.app_context, layout.context_xml)


def derived_dirs(layout: Layout, changes) -> list[str]:
    """What Tomcat derived from a changed WAR (the expanded directory, the compiled JSPs in work/):
    removed while it is stopped, so that it starts from the new bytes (a rolled-back WAR is older
    than the JSPs compiled from the newer one)."""
    out = []
    for c in changes:
        if c.path.endswith(".war") and c.path.startswith(f"{layout.base}/webapps/"):
            name = c.path[len(f"{layout.base}/webapps/"):-len(".war")]
            if c.before is not None:  # else a directory of that name is not the WAR's: left alone
                out.append(f"{layout.base}/webapps/{name}")
            out.append(f"{layout.base}/work/Catalina/localhost/{name}")
    return out
