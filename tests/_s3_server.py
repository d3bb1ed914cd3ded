"""moto's S3 server on loopback for the tests that read or write s3:// (started and stopped by them)."""
from __future__ import annotations

import contextlib
import socket
from typing import Iterator

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(*buckets: str) -> Iterator[tuple[dict, object]]:
    """Yield (environment pointing at the server, a boto3 client); the buckets are created first."""
    pytest.importorskip("moto")
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", **CREDENTIALS}
    # moto keeps its buckets in process-wide state, so a server started after another one in the same
    # pytest process would see the earlier test's objects: start from nothing.
    import requests

    requests.post(f"{env['S3_ENDPOINT_URL']}/moto-api/reset", timeout=10).raise_for_status()
    client = boto3.client("s3", endpoint_url=env["S3_ENDPOINT_URL"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    for b in buckets:
        client.create_bucket(Bucket=b)
    try:
        yield env, client
    finally:
        server.stop()


@contextlib.contextmanager
def credentials_enforced(env: dict) -> Iterator[None]:
    """moto accepts any key by default; inside this block it refuses unknown ones, as S3 does."""
    import requests

    endpoint = env["S3_ENDPOINT_URL"]
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()
