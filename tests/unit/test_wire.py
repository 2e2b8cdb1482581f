"""cli.wire: one HTTP/1.1 answer read whole, by Content-Length, chunked or to its end."""

import pytest

from meso_agentless.cli.wire import WireError, parse


def test_answers_by_length_chunked_and_to_the_end():
    plain = parse(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 2\r\n\r\n{}")  # fmt: skip
    assert (plain.status, plain.headers["content-type"], plain.body) == (
        200, "application/json", b"{}")  # fmt: skip
    chunked = parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")  # fmt: skip
    assert (chunked.status, chunked.body) == (404, b"abcde")
    assert parse(b"HTTP/1.0 500 X\r\n\r\nrest").body == b"rest"


@pytest.mark.parametrize("raw", [
    b"", b"HTTP/1.1 200 OK\r\n", b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab\r\n",
])  # fmt: skip
def test_what_is_not_an_answer_is_a_wire_error(raw):
    with pytest.raises(WireError):
        parse(raw)
