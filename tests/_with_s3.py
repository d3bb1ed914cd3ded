"""Run a command against moto's S3 server on loopback: `python tests/_with_s3.py BUCKET/KEY... -- COMMAND...`.

Each BUCKET/KEY is created (an empty JSON object) before the command runs, with the environment
pointing at the server (S3_ENDPOINT_URL and test credentials); the exit code is the command's.
Used where a documented command names a bucket (tests/test_documented_commands.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _s3_server import s3_server  # noqa: E402


def main(argv: list[str]) -> int:
    split = argv.index("--")
    objects, command = argv[:split], argv[split + 1:]
    buckets = sorted({o.split("/", 1)[0] for o in objects})
    with s3_server(*buckets) as (env, client):
        for o in objects:
            bucket, key = o.split("/", 1)
            client.put_object(Bucket=bucket, Key=key, Body=b"{}")
        return subprocess.run(command, env={**os.environ, **env}).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
