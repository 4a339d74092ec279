"""One-off (issue 10): bring the deployed captures up to a deploy that binds the HTTP Connector.

The captures were taken on the shipped hosts.toml's lab (10.153.0.0/24), which tests may not
bring up again; so instead of a new capture, each deployed Tomcat capture gets what the new
deploy writes and what the lab then shows (tests/test_bind_lab.py measures it):
server.xml through serverxml.patch_listeners, the applied stamp recomputed for it (only where
it matched the captured files), and ss's 8080 line on the node's own address.
`prebind-delta-tomcat1.txt` keeps the original bookworm-delta-tomcat1 capture.

Run from the repository: python tests/data/facts/bind_update.py
"""

import base64
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tcsession import plan, serverxml, state  # noqa: E402
from tcsession.facts import parse_facts  # noqa: E402

HERE = Path(__file__).parent
ADDRESS = {"tomcat1": "10.153.0.112", "tomcat2": "10.153.0.113"}


def replace_file(text: str, path: str, data: bytes) -> str:
    pat = re.compile(rf"^(@@file {re.escape(path)} [^\n]*\n)[^\n]*$", re.M)
    assert pat.search(text), path
    return pat.sub(lambda m: m.group(1) + base64.b64encode(data).decode(), text, count=1)


for f in sorted(HERE.glob("*-tomcat[12].txt")):
    if f.name.startswith(("prebind", "bookworm-fresh")):
        continue
    name = f.stem.rsplit("-", 1)[1]
    text = f.read_text()
    facts = parse_facts(text)
    lay = facts.tomcat
    old = facts.content(lay.server_xml)
    new = serverxml.patch_listeners(old, ADDRESS[name], 8080, f.name)
    files = {p: facts.content(p) for p in plan.tomcat_config_paths(lay)}
    stamp = facts.applied(lay.unit)
    text = replace_file(text, lay.server_xml, new)
    if stamp == plan.config_digest(files):
        files[lay.server_xml] = new
        text = replace_file(text, state.applied_path(lay.unit), (plan.config_digest(files) + "\n").encode())
    text = re.sub(r"^(LISTEN +\d+ +\d+ +)(?:0\.0\.0\.0|\*):8080( +)(?:0\.0\.0\.0|\*):\*$",
                  lambda m: f"{m.group(1)}{ADDRESS[name]}:8080{m.group(2)}0.0.0.0:*", text, flags=re.M)
    f.write_text(text)
    print(f.name, "stamp updated" if stamp else "no stamp")
