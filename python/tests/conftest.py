"""Shared fixtures: a project folder with its own HOME and cache, a real S3 server (moto's,
a third-party implementation) and a real `czc serve`, each on a free loopback port,
started here and stopped afterwards."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, process=None, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (a git-less czc project: it has `.czcache.toml`) with its own HOME
    and cache; the test runs inside it."""
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "project"
    root.mkdir()
    (root / ".czcache.toml").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("CZC_CACHE_DIR", str(tmp_path / "cache"))
    for var in list(os.environ):
        if var.startswith("CZC_") and var != "CZC_CACHE_DIR":
            monkeypatch.delenv(var)
    monkeypatch.chdir(root)
    return root


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto S3 server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint, monkeypatch):
    """A factory of S3Storages, each on a fresh bucket of the moto server."""
    import boto3

    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto_endpoint, **_boto_credentials())

    def make(prefix="czc"):
        bucket = f"test-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        import czcache

        storage = czcache.S3Storage(f"s3://{bucket}/{prefix}", endpoint=moto_endpoint)
        storage.bucket = bucket
        storage.client = client
        storage.url = f"s3://{bucket}/{prefix}"
        return storage

    return make


def _boto_credentials():
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_REGION"],
    }


@pytest.fixture(scope="session")
def czc_bin():
    """The czc binary the README's test command built (`cargo test` builds it)."""
    override = os.environ.get("CZC_BIN")
    path = Path(override) if override else REPO / "target" / "debug" / "czc"
    if not path.is_file():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "czc"], cwd=REPO, check=True)
    return path


@pytest.fixture
def czc_serve(czc_bin, tmp_path):
    """Starts `czc serve <folder>` with a token; returns (url, token, folder)."""
    servers = []

    def start(folder_name="served", token="s3cret"):
        base = tmp_path / f"serve-{len(servers)}"
        base.mkdir()
        (base / "tokens").write_text(token + "\n")
        (base / ".czcache.toml").write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CZC_")}
        env["CZC_CACHE_DIR"] = str(tmp_path / "serve-cache")
        # Port 0: the server picks a free one and names it on its first line.
        process = subprocess.Popen(
            [str(czc_bin), "serve", folder_name, "--listen", "127.0.0.1:0",
             "--tokens", "tokens"],
            cwd=base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        servers.append(process)
        line = process.stderr.readline()
        if " on http://" not in line:
            raise RuntimeError(f"czc serve did not start: {line!r}")
        url = line.strip().rsplit(" on ", 1)[1]
        # Its log goes on: drained, so a full pipe never stalls it.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        return url, token, base / folder_name

    yield start
    for process in servers:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def run_python(code, cwd, *args, env=None, timeout=120):
    """Runs `code` in a fresh interpreter (another process, as a colleague's would be),
    importing the same czcache as this one."""
    import czcache

    full_env = dict(os.environ)
    package_parent = str(Path(czcache.__file__).resolve().parents[1])
    full_env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    )
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )
