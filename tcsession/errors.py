"""The one exception type for expected failures: the task prints its message and exits 1."""


class TcsessionError(Exception):
    """An expected failure, told to the operator as one line (file/host/key, what, what to do)."""
