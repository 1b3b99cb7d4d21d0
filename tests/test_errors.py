"""hub_error_line: the Hub's own message (huggingface_hub's server_message) in one line."""
import pytest

from timm_multilabel.errors import hub_error_line, typed_error_line

httpx2 = pytest.importorskip('httpx2')  # huggingface_hub's HTTP client (its 2.x versions)
from huggingface_hub.utils import hf_raise_for_status  # noqa: E402


def _hub_error(status, url, **response):
    try:
        hf_raise_for_status(httpx2.Response(status, request=httpx2.Request('POST', url), **response))
    except Exception as e:  # noqa: BLE001 - whatever huggingface_hub raises is what we format
        return e
    raise AssertionError('no error raised')


def test_server_message_lines_are_joined_after_the_status():
    e = _hub_error(401, 'https://hub.example/api/repos/create', headers={'X-Error-Message': 'token  expired'},
                   json={'error': 'Invalid credentials in Authorization header'})
    assert str(e).splitlines()[0].startswith("Client error '401 Unauthorized'")  # what a first line said
    assert hub_error_line(e) == 'HTTP 401: token expired; Invalid credentials in Authorization header'


def test_long_messages_are_clipped_and_plain_errors_keep_their_first_line():
    e = _hub_error(403, 'https://hub.example/api/repos/create', json={'error': 'x' * 500})
    line = hub_error_line(e, limit=60)
    assert line == 'HTTP 403: ' + 'x' * 47 + '...' and len(line) == 60
    html = _hub_error(500, 'https://hub.example/api/models/a/b', text='<html>down</html>',
                      headers={'Content-Type': 'text/html'})  # no server message: the first line
    assert hub_error_line(html) == ("Server error '500 Internal Server Error' for url "
                                    "'https://hub.example/api/models/a/b'")
    assert hub_error_line(ConnectionError('refused\nmore')) == 'refused'
    assert hub_error_line(TimeoutError()) == 'TimeoutError'
    # with the class in front, once: 'TimeoutError', not 'TimeoutError: TimeoutError'
    assert typed_error_line(ConnectionError('refused\nmore')) == 'ConnectionError: refused'
    assert typed_error_line(TimeoutError()) == 'TimeoutError'
    assert typed_error_line(e, limit=60) == 'HfHubHTTPError: ' + line
