"""``UserError``: a problem the user can fix (a wrong id, path or file), not a bug.

The ``impala`` command prints its message as one line and exits with 2; only ``impala --debug``
shows the traceback. Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Say what is wrong and what to do, in one sentence: ``unknown env id 'Foo': ...; pass ...``."""


USAGE_EXIT_CODE = 2
