"""The one exception type for bad input: CLIs print it as one line, exit non-zero, no traceback."""
from __future__ import annotations


class UserError(ValueError):
    """Input a person can fix (bad flag, missing file, mismatched ids); the message is one line
    that says what is wrong and where."""
