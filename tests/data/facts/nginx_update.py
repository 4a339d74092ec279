"""One-off (issue 21): (1) give the older bookworm Tomcat captures (taken before facts read
conf/context.xml) the file their tomcat10 package (10.1.60-1~deb12u1) installs, as captured on the
msm-sticky hosts of the same package version (app scope: their conf/context.xml is Debian's own);
(2) bring the deployed nginx captures up to the site that includes the
operator's own directory (tcsession.nginx.OPERATOR_DIR) in its server block, add the main-context
file with worker_shutdown_timeout (tcsession.nginx.render_main, [rolling] drain_timeout's default),
and recompute nginx's applied stamp over them, as a deploy of this version leaves them.

Run from the repository: python tests/data/facts/nginx_update.py
"""

import base64
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tcsession import nginx, state  # noqa: E402
from tcsession.facts import parse_facts  # noqa: E402
from tcsession.inventory import Rolling  # noqa: E402
from tcsession.plan import config_digest, tomcat_config_paths  # noqa: E402

HERE = Path(__file__).parent
END = "    }\n}\n"
INCLUDE = ("\n    # Your own settings for this server: {dir}/*.conf (tcsession never writes there)\n"
           "    include {dir}/*.conf;\n").format(dir=nginx.OPERATOR_DIR)


def section(path: str, data: bytes) -> str:
    return f"@@file {path} 644 root:root\n{base64.b64encode(data).decode()}"


DEBIAN_CONTEXT = "/etc/tomcat10/context.xml"
donor = re.search(rf"^@@file {re.escape(DEBIAN_CONTEXT)} [^\n]*\n[^\n]*$",
                  (HERE / "msm-sticky-tomcat1.txt").read_text(), re.M).group(0)
for f in sorted(HERE.glob("*.txt")):
    text = f.read_text()
    facts = parse_facts(text)
    anchor = re.compile(r"^@@(?:no)?file /var/lib/tomcat10/webapps/ROOT/test\.jsp[^\n]*\n(?:[^@\n][^\n]*\n)?", re.M)
    # (the bookworm-delta captures hold server.xml alone: left as they are)
    if facts.tomcat is not None and facts.tomcat.package == "tomcat10" and DEBIAN_CONTEXT not in text \
            and anchor.search(text):
        assert facts.packages.get("tomcat10") == "10.1.60-1~deb12u1", f
        lay = facts.tomcat
        old = config_digest({p: facts.content(p) for p in tomcat_config_paths(lay)})
        assert facts.applied(lay.unit) == old, f  # the stamp a deploy left: recomputed with the file
        text = anchor.sub(lambda m: m.group(0) + donor + "\n", text, count=1)
        facts = parse_facts(text)
        new = config_digest({p: facts.content(p) for p in tomcat_config_paths(lay)})
        stamp = re.compile(rf"^(@@file {re.escape(state.applied_path(lay.unit))} [^\n]*\n)[^\n]*$", re.M)
        text = stamp.sub(lambda m: m.group(1) + base64.b64encode((new + "\n").encode()).decode(), text, count=1)
        f.write_text(text)
        print("context.xml added to", f.name)
        facts = parse_facts(text)
    site = facts.content(nginx.SITE)
    if site is None or INCLUDE.encode() in site:
        continue
    assert site.decode().endswith(END) and site.count(b"server {") == 1, f
    site = (site.decode()[: -len(END)] + "    }\n" + INCLUDE + "}\n").encode()
    main_path = nginx.main_conf_path(facts.package_manager)
    main = nginx.render_main(Rolling().drain_timeout).encode()
    pat = re.compile(rf"^@@file {re.escape(nginx.SITE)} [^\n]*\n[^\n]*$", re.M)
    assert pat.search(text), f
    text = pat.sub(lambda m: section(nginx.SITE, site) + "\n" + section(main_path, main), text, count=1)
    text = re.sub(rf"^@@nofile {re.escape(main_path)}\n", "", text, flags=re.M)
    digest = config_digest({nginx.SITE: site, main_path: main})
    stamp = re.compile(rf"^(@@file {re.escape(state.applied_path('nginx'))} [^\n]*\n)[^\n]*$", re.M)
    assert stamp.search(text), f
    text = stamp.sub(lambda m: m.group(1) + base64.b64encode((digest + "\n").encode()).decode(), text, count=1)
    f.write_text(text)
    print("updated", f.name)
