"""Errors gunicorn answers itself (before the app sees the request) are JSON like every other
error (issue 10.16): a real gunicorn, as the Procfile starts it, on a free port."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import httpx
import pytest

from web.gunicorn_conf import error_response, limit_request_field_size, limit_request_line


def test_error_response_is_a_complete_json_answer() -> None:
    raw = error_response(431, "Request Header Fields Too Large", "Error parsing headers")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert body == b'{"detail": "Error parsing headers"}'


@pytest.mark.slow
def test_oversized_headers_and_request_lines_answer_json(start_web) -> None:
    url = start_web()
    big_header = httpx.get(
        f"{url}/health", headers={"X-Padding": "x" * (limit_request_field_size + 10)}, timeout=30
    )
    assert big_header.status_code == 431
    assert big_header.headers["content-type"] == "application/json"
    assert "detail" in big_header.json()

    long_line = httpx.get(f"{url}/health?{'q' * (limit_request_line + 10)}", timeout=30)
    assert long_line.status_code == 414 and "detail" in long_line.json()

    # A request gunicorn cannot parse at all.
    address = urlparse(url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as raw:
        raw.sendall(b"NOT A REQUEST\r\n\r\n")
        answer = b""
        while chunk := raw.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert body.startswith(b'{"detail": ')

    assert httpx.get(f"{url}/health", timeout=30).status_code == 200
