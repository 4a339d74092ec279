"""`inv` in the checkout: the tasks of tcsession.tasks (the `tcsession` command runs the same ones
with its own core flags; see tcsession/cli.py)."""

from tcsession.tasks import Exit, _fail_cleanly, ns  # noqa: F401
