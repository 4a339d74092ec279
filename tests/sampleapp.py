"""A small sample application the tests build with zipfile: JSP only (nothing compiled here, so
the same WAR runs on Tomcat 9 (javax) and 10.1 (jakarta)). Its page shows its version and a counter
kept in the session, in the test page's machine-readable format (tcsession.client parses it):

    sample application version=<v>
    node=<node> session=<id> count=<n>
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from conftest import MSM_FIXTURE_REPO

INDEX_JSP = """<%@ page session="true" contentType="text/plain; charset=UTF-8" pageEncoding="UTF-8" %><%
    response.setHeader("Cache-Control", "no-store");
    Object previous = session.getAttribute("count");
    int count = (previous instanceof Integer) ? ((Integer) previous).intValue() + 1 : 1;
    session.setAttribute("count", Integer.valueOf(count));
    String node = System.getProperty("tcsession.node", "unknown");
%>sample application version=VERSION
node=<%= node %> session=<%= session.getId() %> count=<%= count %>
"""

WEB_XML = """<?xml version="1.0" encoding="UTF-8"?>
<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://xmlns.jcp.org/xml/ns/javaee http://xmlns.jcp.org/xml/ns/javaee/web-app_4_0.xsd"
         version="4.0">
  <display-name>sample</display-name>
DISTRIBUTABLE</web-app>
"""

# A jar of real javax.servlet class files (memcached-session-manager's Tomcat 9 module).
JAVAX_JAR = MSM_FIXTURE_REPO / "de/javakaffee/msm/memcached-session-manager-tc9/2.3.2/memcached-session-manager-tc9-2.3.2.jar"


# A session class (compiled here with javac) the page keeps in the session beside the counter, for
# the session-compatibility gate: CART_V1 and CART_FIELD share serialVersionUID 1 (compatible),
# CART_V2 declares 2; CART_COMPUTED declares none, CART_COMPUTED_FIELD gains a field.
CART = "package sample;\npublic class Cart implements java.io.Serializable {\n%s}\n"
CART_V1 = CART % "    private static final long serialVersionUID = 1L;\n    public int items;\n"
CART_FIELD = CART % "    private static final long serialVersionUID = 1L;\n    public int items;\n    public long added;\n"
CART_V2 = CART % "    private static final long serialVersionUID = 2L;\n    public int items;\n"
CART_COMPUTED = CART % "    public int items;\n"
CART_COMPUTED_FIELD = CART % "    public int items;\n    public long added;\n"
# A class only a later version has, kept in the session too: an old-version node cannot read it.
EXTRA = "package sample;\npublic class Extra implements java.io.Serializable {\n    public int n;\n}\n"

CART_JSP = """<%
    sample.Cart cart = new sample.Cart();
    cart.items = count;
    session.setAttribute("cart", cart);
%>"""
EXTRA_JSP = """<% session.setAttribute("extra", new sample.Extra()); %>"""
# How many sessions the context holds, asked in the JVM (Tomcat's Manager MBean): what the tests
# compare with the count a sessions = "drop" deploy reports.
SESSIONS_JSP = """<%@ page session="false" contentType="text/plain; charset=UTF-8" %><%
    javax.management.MBeanServer mbs = java.lang.management.ManagementFactory.getPlatformMBeanServer();
    Object n = mbs.getAttribute(new javax.management.ObjectName(
        "Catalina:type=Manager,host=localhost,context=" + request.getContextPath()), "activeSessions");
%>sessions=<%= n %>
"""

_COMPILED: dict[tuple[str, ...], dict[str, bytes]] = {}


def compile_classes(*sources: str) -> dict[str, bytes]:
    """WEB-INF/classes entries compiled from Java sources of package sample (javac --release 11:
    Tomcat 9's Java on bullseye), cached by source."""
    if sources not in _COMPILED:
        javac = shutil.which("javac") or "/usr/bin/javac"
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for text in sources:
                name = text.split("public class ", 1)[1].split()[0]
                f = Path(tmp) / "src" / "sample" / f"{name}.java"
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text(text)
                files.append(str(f))
            out = Path(tmp) / "out"
            subprocess.run([javac, "--release", "11", "-d", str(out), *files], check=True, capture_output=True,
                           timeout=120)
            _COMPILED[sources] = {f"WEB-INF/classes/{p.relative_to(out)}": p.read_bytes()
                                  for p in sorted(out.rglob("*.class"))}
    return _COMPILED[sources]


BROKEN = "  <listener><listener-class>no.such.Listener</listener-class></listener>\n"


def build_war(path: Path, version: str, distributable: bool = True, javax_lib: bool = False,
              broken: bool = False, cart: str | None = None, extra: bool = False) -> Path:
    """broken: its web.xml names a listener class that does not exist (the context fails to start);
    cart: the source of sample.Cart, which the page then keeps in the session (and sessions.jsp
    says how many sessions the context holds); extra: sample.Extra is kept in the session too."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        # fixed timestamps: the same inputs give the same bytes
        def add(name: str, data: bytes) -> None:
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)

        page = INDEX_JSP.replace("VERSION", version)
        if cart:
            head, sep, tail = page.partition("%>sample application")
            page = head + sep.replace("%>", "%>" + CART_JSP + (EXTRA_JSP if extra else ""), 1) + tail
            for name, data in compile_classes(cart, *([EXTRA] if extra else [])).items():
                add(name, data)
            add("sessions.jsp", SESSIONS_JSP.encode())
        add("index.jsp", page.encode())
        add("WEB-INF/web.xml", WEB_XML.replace("DISTRIBUTABLE", ("  <distributable/>\n" if distributable else "")
                                                    + (BROKEN if broken else "")).encode())
        if javax_lib:
            add("WEB-INF/lib/" + JAVAX_JAR.name, JAVAX_JAR.read_bytes())
    path.write_bytes(buf.getvalue())
    return path
