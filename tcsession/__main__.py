"""`python -m tcsession`: the tcsession command."""

import sys

from tcsession.cli import program

program().run(["tcsession", *sys.argv[1:]])
