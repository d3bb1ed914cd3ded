"""Files in object storage (``s3://``, ``gs://``) read like local ones, through pyarrow's file systems.

``filesystem_for`` keeps one file system per scheme and endpoint per process; S3 takes the usual AWS
variables for credentials and region plus ``S3_ENDPOINT_URL`` for an S3-compatible server, as
Streaming does, so one variable serves conversion and training. :class:`RemoteFile` gives a bucket
object the parts of ``pathlib.Path`` the readers use (name, suffixes, stat, open, read_bytes).
"""
from __future__ import annotations

import io
import os
import types
from pathlib import PurePosixPath
from urllib.parse import urlparse

__all__ = ["URL_SCHEMES", "is_url", "filesystem_for", "RemoteFile"]

URL_SCHEMES = ("s3", "gs", "gcs")


def is_url(path: object) -> bool:
    """True for an object-storage URL this module reads (s3://, gs://)."""
    return isinstance(path, str) and urlparse(path).scheme in URL_SCHEMES


_FILESYSTEMS: dict = {}


def filesystem_for(url: str):
    """(pyarrow FileSystem, path inside it) for an s3:// or gs:// URL; one file system per process.

    S3 uses the usual AWS variables for credentials and region, plus ``S3_ENDPOINT_URL`` for an
    S3-compatible server (as Streaming does, so one variable serves conversion and training).
    """
    import pyarrow.fs as pafs

    u = urlparse(url)
    scheme = "gs" if u.scheme == "gcs" else u.scheme
    key = (scheme, os.environ.get("S3_ENDPOINT_URL"))
    fs = _FILESYSTEMS.get(key)
    if fs is None:
        if scheme == "s3":
            endpoint = os.environ.get("S3_ENDPOINT_URL")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            fs = pafs.S3FileSystem(endpoint_override=endpoint, region=region) if endpoint else pafs.S3FileSystem(region=region)
        elif scheme == "gs":
            fs = pafs.GcsFileSystem()
        else:
            raise ValueError(f"{url}: unsupported URL scheme '{u.scheme}' (supported: s3://, gs://)")
        _FILESYSTEMS[key] = fs
    return fs, (u.netloc + u.path).rstrip("/")


class _Raw(io.RawIOBase):
    """A pyarrow input file as a raw stream, so io.BufferedReader can buffer it."""

    def __init__(self, f):
        self._f = f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._f.seekable()

    def readinto(self, b) -> int:
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()


class RemoteFile:
    """A file in object storage, read through pyarrow (``str()`` is its URL, used in messages)."""

    def __init__(self, url: str, size: int | None = None, mtime: float | None = None):
        self.url, self.size, self.mtime = url, size, mtime
        self._name = PurePosixPath(urlparse(url).path)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemoteFile({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteFile) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return self._name.name

    @property
    def suffix(self) -> str:
        return self._name.suffix

    @property
    def suffixes(self) -> list[str]:
        return self._name.suffixes

    def stat(self):
        if self.size is None:
            fs, path = filesystem_for(self.url)
            self.size = fs.get_file_info(path).size or 0
        return types.SimpleNamespace(st_size=self.size)

    def open(self, seekable: bool = False) -> io.BufferedReader:
        """A buffered binary reader (always seekable: ranged reads, 1 MiB at a time)."""
        fs, path = filesystem_for(self.url)
        return io.BufferedReader(_Raw(fs.open_input_file(path)), buffer_size=1 << 20)

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()

    def open_parquet_source(self):
        fs, path = filesystem_for(self.url)
        return fs.open_input_file(path)
