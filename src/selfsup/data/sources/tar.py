"""The safe tar reader: (KEY, {ext: bytes}) groups from a local or http(s) tar stream, read in
memory and never extracted; unsafe names, oversized members and oversized samples become skip
markers, and damage anywhere in a shard is an error once the samples before it are out.

A location is a local file or an http(s) URL, nothing else: no other scheme reaches a library
that could hand it to a shell (webdataset's ``gopen`` runs ``pipe:`` strings as commands)."""

from __future__ import annotations

import gzip
import re
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from selfsup.data.sources.base import skip

MAX_MEMBER_BYTES = 256 * 2**20  # a tar member above this is skipped unread (a shard is never trusted)
MAX_SAMPLE_BYTES = 512 * 2**20  # the members of one KEY together: above this the sample is skipped


def is_url(spec: str) -> bool:
    """An ``http://`` or ``https://`` URL: the only remote locations read (through urllib)."""
    return re.match(r"https?://", str(spec), re.IGNORECASE) is not None


def _open_stream(url: str):
    """http(s) -> urllib (no curl, no shell); anything else is a local file opened as one, so a
    string like ``pipe:cmd`` is at worst a file name that does not exist."""
    if is_url(url):
        return urllib.request.urlopen(url, timeout=60)
    path = Path(url)
    if not path.is_file():
        raise FileNotFoundError(f"{url}: no such file")
    return open(path, "rb")


def _unsafe_name(name: str) -> bool:
    """An absolute path or one with a `..` part: never a sample key (nothing is extracted to disk)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) > 1 and parts[0][1] == ":")


class _Deferred:
    """A stream whose read error ends the data instead of failing that read: tarfile reads ahead
    in 10 KB records, so the members before the damage are still yielded; `_check_end` raises it."""

    def __init__(self, stream) -> None:
        self.error = None
        self.read_some = getattr(stream, "read1", stream.read)  # read1: what is there, not all or nothing

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self.read_some(size)
        except Exception as e:  # noqa: BLE001 - gzip CRC/length, zlib, a dropped connection...
            self.error = e
            return b""


def _check_end(tar: tarfile.TarFile, data: _Deferred) -> None:
    """Raise unless the stream ends cleanly: only zeros after the last header tarfile read, no read
    error, and for gzip a CRC and length that hold.

    tarfile ends an archive quietly at the first invalid header, so a shard damaged halfway would
    pass for a shorter one; reading to the end of the stream makes that damage an error.
    """
    while chunk := tar.fileobj.read(1 << 16):
        if chunk.count(0) != len(chunk):
            raise tarfile.ReadError("damaged: data after the last readable member")
    if data.error is not None:
        raise data.error


def tar_samples(url: str) -> Iterator[tuple[str, dict[str, bytes]] | dict]:
    """(KEY, {ext: bytes}) for each sample of a (gzipped) tar stream; members grouped by KEY.EXT.

    Read in memory, never extracted. A member with an unsafe name (absolute, `..`) or above
    `MAX_MEMBER_BYTES` is not read: a skip marker stands in for it. A KEY whose members add up to
    more than `MAX_SAMPLE_BYTES` is one skip marker ("too large"): what it had buffered is dropped
    and its further members are not read, so one sample never holds more than that in memory.
    Damage anywhere in the shard (bad header, gzip CRC or length) raises once the samples before
    it have been yielded.
    """
    path = urlparse(url).path if is_url(url) else url
    gz, plain = path.endswith((".gz", ".tgz")), path.endswith(".tar")
    with _open_stream(url) as stream:
        data = _Deferred(gzip.GzipFile(fileobj=stream, mode="rb") if gz else stream)  # GzipFile checks the CRC
        with tarfile.open(fileobj=data, mode="r|" if gz or plain else "r|*") as tar:
            key, group, size, dropped = None, {}, 0, False
            for m in tar:
                folder, _, base = m.name.rpartition("/")
                if _unsafe_name(m.name):
                    yield skip(m.name, "unsafe path")
                    continue
                if m.isfile() and m.size > MAX_MEMBER_BYTES:
                    yield skip(m.name, f"too large: {m.size} bytes")
                    continue
                if not m.isfile() or base.startswith(".") or "." not in base:
                    continue
                stem, _, ext = base.partition(".")
                k = f"{folder}/{stem}" if folder else stem
                if k != key:
                    if group:
                        yield key, group
                    key, group, size, dropped = k, {}, 0, False
                if dropped:
                    continue
                size += m.size
                if size > MAX_SAMPLE_BYTES:
                    group, dropped = {}, True
                    yield skip(k, f"too large: sample over {MAX_SAMPLE_BYTES} bytes")
                    continue
                group[ext.lower()] = tar.extractfile(m).read()
            _check_end(tar, data)
            if group:
                yield key, group
