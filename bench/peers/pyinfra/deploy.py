"""The pyinfra peer of bench/deploy_bench.py: the same delta cluster done the plain way, with the
blog's settings (issue 24). Not part of tcsession; run by the bench with pyinfra from its own
virtual environment (.cache/pyinfra-venv):

    pyinfra inventory.py deploy.py -y --data channel_send_options=6

What it does, idiomatic pyinfra (facts, then operations that change only what differs):
- nginx: the package, a site sending to both Tomcats (round robin, next upstream on error), the
  default site gone, a reload when the site changed;
- each Tomcat: the package, the test page and a web.xml with <distributable/> (the files
  bench/deploy_bench.py renders with tcsession's own renderers, so both serve the same
  application), server.xml from a template (DeltaManager, multicast membership with the blog's
  frequency="500", the given channelSendOptions); when one of them changed, a rolling restart:
  one host after the other (`_serial`), `systemctl restart` then wait until /test.jsp answers 200.
  No drain in nginx, no wait for the session state, no log gate: what the blog does.
"""

from pathlib import Path

from pyinfra import host
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

HERE = Path(__file__).resolve().parent
FILES = Path(host.data.get("files_dir"))  # test.jsp and web.xml, written by the bench

if "nginx" in host.groups:
    apt.packages(name="nginx", packages=["nginx"], no_recommends=True)
    default = files.link(name="no default site", path="/etc/nginx/sites-enabled/default", present=False)
    site = files.template(name="nginx site", src=str(HERE / "nginx.conf.j2"), dest="/etc/nginx/conf.d/peer.conf",
                          tomcats=host.data.get("tomcats"))
    systemd.service(name="reload nginx", service="nginx", running=True, reloaded=True,
                    _if=any_changed(default, site))

if "tomcats" in host.groups:
    apt.packages(name="tomcat10", packages=["tomcat10"], no_recommends=True)
    root = "/var/lib/tomcat10/webapps/ROOT"
    page = files.put(name="test page", src=str(FILES / "test.jsp"), dest=f"{root}/test.jsp", mode="644")
    web = files.put(name="web.xml", src=str(FILES / "web.xml"), dest=f"{root}/WEB-INF/web.xml", mode="644",
                    create_remote_dir=True)
    conf = files.template(name="server.xml", src=str(HERE / "server.xml.j2"), dest="/etc/tomcat10/server.xml",
                          user="root", group="tomcat", mode="640", address=host.data.get("address"),
                          jvm_route=host.name, send=host.data.get("channel_send_options", "6"))
    url = f"http://{host.data.get('address')}:8080/test.jsp"
    server.shell(
        name="rolling restart, until the test page answers",
        commands=[f"systemctl restart tomcat10 && for i in $(seq 1 600); do "
                  f"[ \"$(curl -s -o /dev/null -m 2 -w '%{{http_code}}' {url})\" = 200 ] && exit 0; sleep 0.1; "
                  "done; exit 1"],
        _serial=True,
        _if=any_changed(page, web, conf),
    )
