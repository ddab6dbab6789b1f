"""WebDataset-style tar shards: consecutive members sharing a key (the member path up to the first dot of
its file name) form one sample; its image is the member with an image extension, its optional label the
``.cls`` or else the ``.txt`` member. Other members (``.json`` metadata, ...) are skipped unread. One shard per tar
file.

A sample is named ``<tar uri>#<image member>``, the member's name with its extension
(``shard-00001.tar#010012_multipage_rgb.png``), or ``<tar uri>#<key>`` when it has no image member (an error row).

img2dataset's ``webdataset`` output is such a folder of tars: ``00000.tar``, ``00001.tar``, ... with ``KEY.jpg``,
``KEY.txt`` (the caption, read as the label) and ``KEY.json`` (metadata) per sample; the ``00000.parquet``
metadata and ``00000_stats.json`` beside each tar are not tars and are not read.

Planning opens the first tar and reads its first header (:func:`check_tar`), so a source of files that are not tars
is refused before a run starts; a later tar that cannot be read fails as its shard."""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator

import fsspec

from .base import IMAGE_EXTENSIONS, Record, Shard, SourceError, file_version, fingerprint, source_files

TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
_IMAGE_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
_LABEL_EXTS = ("cls", "txt")
_NOT_A_TAR = (tarfile.TarError, EOFError, zlib.error)  # what opening or listing a file that is no tar raises


def plan(cfg) -> Iterator[tuple[str, tuple, str]]:
    """One (tar uri, keys, fingerprint) per tar; keys is () for the whole tar, or the first keys under ``limit``."""
    left = cfg.limit
    for i, (uri, info) in enumerate(source_files(cfg.source, TAR_EXTENSIONS, "tar files").items()):
        if i == 0:
            check_tar(uri)
        keys: tuple = ()
        if left is not None:
            all_keys = _keys(uri)
            keys, left = tuple(all_keys[:left]), left - min(left, len(all_keys))
        yield uri, keys, fingerprint(uri, keys, file_version(info))
        if left == 0:
            return


def check_tar(uri: str) -> None:
    """A SourceError naming ``uri`` unless it begins as a tar archive (compressed or not) does: reads its first
    header only (or the end-of-archive block of an empty tar), never the rest of the file."""
    try:
        with fsspec.open(uri, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tf:
            tf.next()
    except _NOT_A_TAR as e:
        raise SourceError(f"{uri} is not a tar archive ({e})") from None


def read(shard: Shard) -> Iterator[Record]:
    """Each sample's image bytes and label; an unreadable image member gives a Record with its error.

    Raises when the tar itself cannot be opened or its headers cannot be read (a whole-shard failure).
    """
    keep = set(shard.items) or None
    fs, path = fsspec.core.url_to_fs(shard.uri)
    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tf:
        members: dict = {}
        for key, members in _samples(tf):
            if keep is None or key in keep:
                yield _record(shard.uri, key, members)
        broken = any(isinstance(data, tarfile.ReadError) for _, data in members.values())  # already reported
        rest = fs.size(path) - tf.offset
        stream = tf.fileobj  # mode "r|*": a tarfile._Stream, which knows the compression
        if keep is None and not broken and getattr(stream, "comptype", None) == "tar" and rest < 2 * tarfile.BLOCKSIZE:
            # tarfile stops silently at a missing or partial header: without the two zero blocks that end
            # every tar, the file was cut after its last complete member.
            raise tarfile.ReadError(f"truncated tar: it ends {rest} bytes after its last "
                                    f"complete member, without the end-of-archive blocks")


def _samples(tf: tarfile.TarFile) -> Iterator[tuple[str, dict]]:
    """(key, {extension: (member name, bytes | Exception | None)}) per sample; member data is read only for images
    and labels."""
    key: str | None = None
    members: dict[str, tuple[str, bytes | Exception | None]] = {}
    for m in tf:
        if m.isdir():
            continue
        k, ext = _key_ext(m.name)
        if k != key and key is not None:
            yield key, members
            members = {}
        key = k
        if ext in _IMAGE_EXTS or ext in _LABEL_EXTS:
            try:
                fobj = tf.extractfile(m)
                data = fobj.read() if fobj is not None else OSError(f"member {m.name} is not a regular file")
                members[ext] = (m.name, data)
            except (tarfile.TarError, OSError, EOFError) as e:
                members[ext] = (m.name, e)
                if isinstance(e, tarfile.ReadError):  # the data ends inside this member: nothing after it can be read
                    yield key, members
                    return
        else:
            members.setdefault(ext, (m.name, None))
    if key is not None:
        yield key, members


def _key_ext(name: str) -> tuple[str, str]:
    """WebDataset naming: ``dir/abc.seg.png`` -> (``dir/abc``, ``seg.png``)."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _keys(uri: str) -> list[str]:
    try:
        with fsspec.open(uri, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tf:
            return list(dict.fromkeys(_key_ext(m.name)[0] for m in tf if not m.isdir()))
    except _NOT_A_TAR as e:
        raise SourceError(f"{uri} is not a readable tar archive ({e})") from None


def _record(uri: str, key: str, members: dict[str, tuple[str, bytes | Exception | None]]) -> Record:
    """The sample's Record, named by its image member (or by its key when it has none)."""
    texts = [members[e][1] for e in _LABEL_EXTS if e in members]
    text = next((t for t in texts if isinstance(t, bytes)), None)
    label = text.decode("utf-8", "replace").strip() if text is not None else None
    ext = next((e for e in _IMAGE_EXTS if e in members), None)
    if ext is None:
        return Record(f"{uri}#{key}", None, label, error=f"sample has no image member (members: {sorted(members)})")
    name, data = members[ext]
    item = f"{uri}#{name}"
    if not isinstance(data, bytes):  # the member could not be read
        return Record(item, None, label, error=f"{type(data).__name__}: {data}")
    return Record(item, data, label)
