"""One-off (issue 21): bring the deployed captures' test page up to the one that also shows the
request's scheme and client address (tcsession.webapp.render_test_jsp). The page is the only file
changed (it is recompiled alone: no applied stamp covers it).

Run from the repository: python tests/data/facts/testpage_update.py
"""

import base64
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tcsession import webapp  # noqa: E402
from tcsession.facts import parse_facts  # noqa: E402

HERE = Path(__file__).parent
for f in sorted(HERE.glob("*.txt")):
    text = f.read_text()
    facts = parse_facts(text)
    lay = facts.tomcat
    if lay is None or facts.content(lay.test_page) is None or not webapp.is_our_test_page(facts.content(lay.test_page)):
        continue
    pat = re.compile(rf"^(@@file {re.escape(lay.test_page)} [^\n]*\n)[^\n]*$", re.M)
    assert pat.search(text), f
    f.write_text(pat.sub(lambda m: m.group(1) + base64.b64encode(webapp.render_test_jsp()).decode(), text, count=1))
    print("updated", f.name)
