"""Data directory resolution, downloads with md5 from a loopback server, the numpy-only unpickler."""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from interplab import data
from interplab.errors import InterplabError


@pytest.fixture()
def loopback(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_md5_and_tries_the_next_url(loopback, tmp_path) -> None:
    root, base = loopback
    payload = b"weights" * 100
    (root / "good.bin").write_bytes(payload)
    (root / "bad.bin").write_bytes(b"tampered")
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "dest"
    path = data.download("x/model.bin", dest, urls=(base + "missing.bin", base + "bad.bin", base + "good.bin"), md5=md5)
    assert path == dest / "x" / "model.bin" and path.read_bytes() == payload
    with pytest.raises(InterplabError, match="md5"):
        data.download("y/model.bin", dest, urls=(base + "bad.bin",), md5=md5)
    assert not (dest / "y" / "model.bin").exists()


def test_download_of_a_known_file_uses_its_md5(loopback, tmp_path, shared_data) -> None:
    root, base = loopback
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    known = data.KNOWN_FILES["mnist/t10k-labels-idx1-ubyte.gz"]
    path = data.download(known.path, tmp_path, urls=(base + "t10k-labels-idx1-ubyte.gz",))
    assert data.md5sum(path) == known.md5


def test_data_dir_precedence(tmp_path, monkeypatch) -> None:
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv("INTERPLAB_DATA", str(env_dir))
    assert data.data_dir() == env_dir
    assert data.data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("INTERPLAB_DATA", str(tmp_path / "nope"))
    with pytest.raises(InterplabError, match="does not exist"):
        data.data_dir()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED",))


def test_numpy_only_unpickler_refuses_code_and_runs_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"labels": _Exploit()}))
    with pytest.raises(InterplabError, match="not a numpy-only pickle"):
        data.load_numpy_pickle(evil)
    assert not (tmp_path / "EXPLOITED").exists()
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps({"a": np.arange(3.0), "b": [np.eye(2)]}))
    loaded = data.load_numpy_pickle(good)
    assert loaded["a"].tolist() == [0.0, 1.0, 2.0] and loaded["b"][0].shape == (2, 2)
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(good.read_bytes()[:20])
    with pytest.raises(InterplabError):
        data.load_numpy_pickle(truncated)


def test_shared_files_match_their_published_checksums(shared_data) -> None:
    for rel, known in data.KNOWN_FILES.items():
        path = Path(shared_data) / rel
        if path.exists():
            assert data.md5sum(path) == known.md5, rel
