"""How the package behaves as a Python citizen: Ctrl-C stops a stalled transfer at once,
the GIL is free while czc waits, progress reaches a callback, warnings go through
`warnings`, type stubs ship."""

import json
import os
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

import czcache

from conftest import S3_ENV, run_python


@pytest.fixture
def stalled_server():
    """A server that accepts connections and never answers (a hung remote)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_ctrl_c_interrupts_a_stalled_transfer_at_once(project, stalled_server):
    code = textwrap.dedent(f"""
        import json, os, signal, threading, time, czcache
        bucket = czcache.S3Storage("s3://hung/czc", endpoint={stalled_server!r}, timeout=60)
        cache = czcache.CopyToLocalCache([bucket])
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            cache.get("models/bert.bin")
            outcome = "returned"
        except KeyboardInterrupt:
            outcome = "interrupted"
        print(json.dumps([outcome, time.monotonic() - start]))
    """)
    run = run_python(code, project, env=S3_ENV, timeout=60)
    assert run.returncode == 0, run.stderr
    outcome, elapsed = json.loads(run.stdout)
    assert outcome == "interrupted"
    assert elapsed < 5, f"Ctrl-C took {elapsed:.1f}s against a 60s timeout"


def test_the_gil_is_released_while_czc_waits_on_the_network(project, stalled_server, monkeypatch):
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = czcache.S3Storage("s3://hung/czc", endpoint=stalled_server, timeout=1.5)
    cache = czcache.CopyToLocalCache([bucket])
    failure = []

    def get():
        try:
            cache.get("models/bert.bin")
        except czcache.Error as err:
            failure.append(err)

    thread = threading.Thread(target=get)
    thread.start()
    spins = 0
    while thread.is_alive():
        spins += 1
        time.sleep(0.001)
    # About 1 spin per millisecond of the wait: a held GIL would allow almost none.
    assert spins > 200, spins
    message = str(failure[0]).lower() if failure else ""
    assert "timed out" in message or "timeout" in message, failure


def test_progress_reaches_a_callback_and_warnings_go_through_warnings(project, tmp_path):
    remote = tmp_path / "remote"
    (project / ".czcache.toml").write_text(
        f'[remote]\ndefault = "archive"\n\n[remotes.archive]\nurl = "{remote}"\n'
    )
    for i in range(3):
        (project / f"part{i}.bin").write_bytes(os.urandom(100_000))
    czcache.save([f"part{i}.bin" for i in range(3)])
    updates = []
    czcache.set_progress(lambda *update: updates.append(update))
    try:
        czcache.push()
    finally:
        czcache.set_progress(None)
    finished = [u for u in updates if u[5]]
    assert finished, updates
    title, files_done, files_total, bytes_done, bytes_total, _ = finished[-1]
    assert "push" in title
    assert (files_done, files_total) == (3, 3)
    assert bytes_done == bytes_total == 300_000
    with pytest.raises(TypeError):
        czcache.set_progress(42)


def test_type_stubs_and_docstrings_ship():
    package = Path(czcache.__file__).parent
    assert (package / "py.typed").is_file()
    assert (package / "__init__.pyi").is_file()
    undocumented = [
        name for name in czcache.__all__
        if not (getattr(czcache, name).__doc__ or "").strip()
    ]
    assert undocumented == []
    stubs = (package / "__init__.pyi").read_text()
    missing = [name for name in czcache.__all__ if name not in stubs]
    assert missing == []


def test_progress_can_go_to_tqdm(project, tmp_path, capsys):
    pytest.importorskip("tqdm")
    remote = tmp_path / "remote"
    (project / ".czcache.toml").write_text(
        f'[remote]\ndefault = "archive"\n\n[remotes.archive]\nurl = "{remote}"\n'
    )
    (project / "big.bin").write_bytes(os.urandom(1 << 20))
    czcache.save("big.bin")
    czcache.set_progress("tqdm")
    try:
        czcache.push()
    finally:
        czcache.set_progress(None)
    err = capsys.readouterr().err
    # A tqdm bar named after the task, ending full.
    assert "push" in err and "100%" in err, err
