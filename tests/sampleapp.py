"""A small sample application the tests build with zipfile: JSP only (nothing compiled here, so
the same WAR runs on Tomcat 9 (javax) and 10.1 (jakarta)). Its page shows its version and a counter
kept in the session, in the test page's machine-readable format (tcsession.client parses it):

    sample application version=<v>
    node=<node> session=<id> count=<n>
"""

from __future__ import annotations

import io
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


BROKEN = "  <listener><listener-class>no.such.Listener</listener-class></listener>\n"


def build_war(path: Path, version: str, distributable: bool = True, javax_lib: bool = False,
              broken: bool = False) -> Path:
    """broken: its web.xml names a listener class that does not exist (the context fails to start)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        # fixed timestamps: the same inputs give the same bytes
        def add(name: str, data: bytes) -> None:
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)

        add("index.jsp", INDEX_JSP.replace("VERSION", version).encode())
        add("WEB-INF/web.xml", WEB_XML.replace("DISTRIBUTABLE", ("  <distributable/>\n" if distributable else "")
                                                    + (BROKEN if broken else "")).encode())
        if javax_lib:
            add("WEB-INF/lib/" + JAVAX_JAR.name, JAVAX_JAR.read_bytes())
    path.write_bytes(buf.getvalue())
    return path
