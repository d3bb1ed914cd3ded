"""Preflight of the remote paths a run names: every s3:// URL is checked for credentials and
reachability before step 0, with a short timeout, and a failure is one line naming the config key,
the URL and what is missing. Without this a run without credentials fails at its first shard or
checkpoint with a long traceback from the transport library, minutes or hours in.

What is checked, per key:

* `data` / `eval_data` stream `remote` (and the validation split they imply): the stream's
  `index.json` can be read (HEAD);
* `load_path`: the checkpoint object exists;
* `save_folder`: the bucket is listed and written (a zero-byte probe object, deleted at once),
  since checkpoints are written there only after the first save interval.

S3 is reached like Streaming and Composer reach it: boto3's credential chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role) and ``S3_ENDPOINT_URL`` for an S3-compatible
server. Other schemes (gs://, oci://, hf://, ...) are passed to Streaming / Composer unchecked,
and the log says so.
"""
from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import urlparse

from flexbert.errors import ConfigError

__all__ = ["RemotePath", "remote_paths", "check_remote_paths", "S3_TIMEOUT_S"]

log = logging.getLogger(__name__)

S3_TIMEOUT_S = 5  # connect and read timeout of each probe; one attempt, no retries
_CREDENTIALS_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run where an "
                     "instance role applies)")


@dataclass(frozen=True)
class RemotePath:
    """One URL a run will read or write, with the config key that names it."""

    key: str  # e.g. "data.streams[1].remote"
    url: str  # the object or prefix probed
    access: str  # "object" (must exist), "folder-write" (list and write under it)


def _join(*parts: str | None) -> str:
    return "/".join(p.strip("/") for p in parts if p)


def _stream_paths(section: str, data: Any) -> Iterator[RemotePath]:
    shorthand = not data.streams
    for i, s in enumerate(data.train_streams()):
        if s.remote and "://" in s.remote:
            key = f"{section}.remote" if shorthand else f"{section}.streams[{i}].remote"
            yield RemotePath(key, _join(s.remote, s.split, "index.json"), "object")
    if data.eval_streams:
        for i, s in enumerate(data.eval_streams):
            if s.remote and "://" in s.remote:
                yield RemotePath(f"{section}.eval_streams[{i}].remote", _join(s.remote, s.split, "index.json"), "object")
    elif data.eval_split:
        for i, s in enumerate(data.validation_streams()):
            if s.remote and "://" in s.remote:
                key = f"{section}.remote" if shorthand else f"{section}.streams[{i}].remote"
                yield RemotePath(f"{key} (eval_split {data.eval_split})", _join(s.remote, s.split, "index.json"), "object")


def remote_paths(cfg: Any) -> list[RemotePath]:
    """Every URL (a path with a scheme) the run config names, in config order."""
    found = list(_stream_paths("data", cfg.data))
    if cfg.eval_data is not None:
        found += list(_stream_paths("eval_data", cfg.eval_data))
    if cfg.load_path and "://" in cfg.load_path:
        found.append(RemotePath("load_path", cfg.load_path, "object"))
    if cfg.save_folder and "://" in cfg.save_folder:
        found.append(RemotePath("save_folder", cfg.save_folder, "folder-write"))
    return found


def check_remote_paths(cfg: Any, timeout_s: float = S3_TIMEOUT_S) -> None:
    """Raise ConfigError on the first remote path that cannot be used; log the ones not checked."""
    for p in remote_paths(cfg):
        scheme = urlparse(p.url).scheme
        if scheme == "s3":
            _check_s3(p, timeout_s)
        else:
            log.info("%s %s: %s:// is not checked before the run (only s3:// is); its first read will tell",
                     p.key, p.url, scheme)


def _s3_client(timeout_s: float):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    creds = session.get_credentials()
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"total_max_attempts": 1})
    client = session.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None, config=config)
    return client, creds


def _check_s3(p: RemotePath, timeout_s: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    where = f"{p.key} {p.url}"
    client, creds = _s3_client(timeout_s)
    if creds is None or not creds.access_key:
        raise ConfigError(f"{where}: no AWS credentials are set (AWS_ACCESS_KEY_ID is missing); {_CREDENTIALS_HINT}")
    u = urlparse(p.url)
    bucket, key = u.netloc, u.path.lstrip("/")
    endpoint = os.environ.get("S3_ENDPOINT_URL") or "AWS S3"
    try:
        if p.access == "object":
            client.head_object(Bucket=bucket, Key=key)
        else:
            prefix = key.rstrip("/") + "/" if key else ""
            client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
            probe = f"{prefix}.flexbert-write-probe-{uuid.uuid4().hex}"
            client.put_object(Bucket=bucket, Key=probe, Body=b"")
            client.delete_object(Bucket=bucket, Key=probe)
    except NoCredentialsError:
        raise ConfigError(f"{where}: no AWS credentials are set; {_CREDENTIALS_HINT}") from None
    except ClientError as e:
        err = e.response.get("Error", {})
        code, status = str(err.get("Code", "")), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchKey", "NotFound") and p.access == "object":
            why = " (not an MDS dataset, or the wrong split)" if p.url.endswith("index.json") else ""
            raise ConfigError(f"{where}: no such object{why}; fix {p.key.split(' ')[0]}") from None
        if code == "NoSuchBucket" or (code in ("404", "NotFound") and p.access != "object"):
            raise ConfigError(f"{where}: bucket '{bucket}' does not exist at {endpoint}; fix {p.key}") from None
        if status == 403 or code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"):
            action = "read" if p.access == "object" else "list and write"
            raise ConfigError(f"{where}: the credentials were refused ({code or status}): AWS_ACCESS_KEY_ID "
                              f"{_masked(creds.access_key)} may not {action} it; check the key, its secret and its permissions") from None
        raise ConfigError(f"{where}: S3 answered {code or status}: {err.get('Message', '')}".rstrip(": ")) from None
    except BotoCoreError as e:
        raise ConfigError(f"{where}: cannot reach {endpoint} within {timeout_s:g} s ({type(e).__name__}); "
                          "check the network and S3_ENDPOINT_URL") from None


def _masked(access_key: str) -> str:
    return access_key[:4] + "..." if len(access_key) > 8 else "(set)"
