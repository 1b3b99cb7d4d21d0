"""The one exception type for bad input: CLIs print it as one line, exit non-zero, no traceback;
and :func:`hub_error_line` / :func:`typed_error_line`, the one line such a message quotes for a Hub or
network error (the latter with the error's class in front)."""
from __future__ import annotations

__all__ = ['UserError', 'hub_error_line', 'typed_error_line']


class UserError(ValueError):
    """Input a person can fix (bad flag, missing file, mismatched ids); the message is one line
    that says what is wrong and where."""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3].rstrip() + '...'


def hub_error_line(e: BaseException, limit: int = 200) -> str:
    """One line (at most ``limit`` characters) for a Hub or network error.

    huggingface_hub's ``HfHubHTTPError`` puts the Hub's own words ("Invalid credentials in
    Authorization header", "Repository not found") in ``server_message`` (its ``X-Error-Message``
    header and the JSON body's ``error``/``errors``, one per line) and below the first line of its
    text, which says only ``401 Client Error. (Request ID: ...)``: then ``HTTP <status>: <server
    message>`` (its lines joined by ``; ``); else the exception's first line, else its class name.
    """
    status = getattr(getattr(e, 'response', None), 'status_code', None)
    server = '; '.join(' '.join(line.split()) for line in str(getattr(e, 'server_message', None) or '').splitlines()
                       if line.strip())
    if status is not None and server:
        return _clip(f'HTTP {status}: {server}', limit)
    text = str(e).strip()
    return _clip(' '.join(text.splitlines()[0].split()), limit) if text else type(e).__name__


def typed_error_line(e: BaseException, limit: int = 200) -> str:
    """``<class>: <hub_error_line>`` (the class alone when the error has no text)."""
    text = hub_error_line(e, limit)
    return f'{type(e).__name__}: {text}' if text != type(e).__name__ else text
