"""Image sources in the layouts users have them, written from a list of encoded images (any format PIL reads).

- :func:`write_img2dataset`: an img2dataset output folder. Samples are cut into shards of ``samples_per_shard``;
  shard ``s`` is numbered ``{s:05d}`` and a sample's key is the shard number followed by its index in the shard,
  ``ceil(log10(samples_per_shard))`` digits wide (``000010012``: shard 1, sample 12 of 10000 per shard). Per shard:

  - ``webdataset`` format: ``00000.tar`` holding ``KEY.jpg`` (the image), ``KEY.json`` (its metadata) and ``KEY.txt``
    (its caption) per sample, in that order (a sample's members sorted by extension), for the samples downloaded;
    ``00000.parquet`` with every sample's metadata and no image; ``00000_stats.json``, the shard's counts.
  - ``parquet`` format: ``00000.parquet`` with the image bytes in a ``jpg`` column beside the metadata (null for a
    sample that failed); ``00000_stats.json``.

  Metadata columns: ``key``, ``url``, ``caption``, ``status`` (``success`` or ``failed_to_download``),
  ``error_message``, ``width``, ``height``, ``original_width``, ``original_height``, ``exif``, ``sha256``.
- :func:`write_hf_parquet`: a Hugging Face ``datasets`` parquet export: an ``image`` column of structs ``{bytes,
  path}`` (an ``Image`` feature) and an int ``label`` column (a ``ClassLabel``); with ``embed=False`` the bytes are
  null and ``path`` names a file written beside the parquet file (under ``images/``), relative to its folder.
- :func:`write_csv_manifest`: a CSV manifest (``uri,label``) of image files, each path relative to the manifest's
  own folder.
- :func:`write_folder`: the same images as files in one folder, named ``<name>.<ext>``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def img2dataset_keys(n: int, samples_per_shard: int) -> list[str]:
    """The keys img2dataset gives ``n`` samples, ``samples_per_shard`` per shard."""
    width = max(1, math.ceil(math.log10(samples_per_shard)))
    return [f"{i // samples_per_shard:05d}{i % samples_per_shard:0{width}d}" for i in range(n)]


def write_img2dataset(folder: Path, images: list[bytes], samples_per_shard: int = 5, output_format: str = "webdataset",
                      failed: frozenset[int] = frozenset()) -> list[Path]:
    """img2dataset's output of ``images`` under ``folder`` (module docstring); ``failed``: indices of samples whose
    download failed (metadata only). Returns the shard files holding the images (tars, or parquet files)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = img2dataset_keys(len(images), samples_per_shard)
    shards = []
    for s, start in enumerate(range(0, len(images), samples_per_shard)):
        rows = [_metadata(keys[i], images[i], i in failed) for i in range(start, min(start + samples_per_shard,
                                                                                        len(images)))]
        data = [None if i in failed else images[i] for i in range(start, start + len(rows))]
        name = folder / f"{s:05d}"
        if output_format == "webdataset":
            with tarfile.open(name.with_suffix(".tar"), "w") as tf:
                for row, image in zip(rows, data, strict=True):
                    if image is not None:
                        for ext, member in (("jpg", image), ("json", json.dumps(row).encode()),
                                            ("txt", row["caption"].encode())):
                            info = tarfile.TarInfo(f"{row['key']}.{ext}")
                            info.size = len(member)
                            tf.addfile(info, io.BytesIO(member))
            pq.write_table(pa.Table.from_pylist(rows), name.with_suffix(".parquet"))
            shards.append(name.with_suffix(".tar"))
        elif output_format == "parquet":
            table = pa.Table.from_pylist(rows).add_column(1, "jpg", pa.array(data, pa.binary()))
            pq.write_table(table, name.with_suffix(".parquet"))
            shards.append(name.with_suffix(".parquet"))
        else:
            raise ValueError(f"output_format is 'webdataset' or 'parquet', not {output_format!r}")
        ok = sum(r["status"] == "success" for r in rows)
        stats = dict(count=len(rows), successes=ok, failed_to_download=len(rows) - ok, failed_to_resize=0,
                     duration=0.5, start_time=1.7e9, end_time=1.7e9 + 0.5,
                     status_dict={"success": ok, **({"HTTP Error 404": len(rows) - ok} if len(rows) > ok else {})})
        (folder / f"{s:05d}_stats.json").write_text(json.dumps(stats))
    return shards


def _metadata(key: str, image: bytes, failed: bool) -> dict:
    width, height = (None, None) if failed else Image.open(io.BytesIO(image)).size
    return dict(key=key, url=f"https://example.com/{key}.jpg", caption=f"a photo numbered {int(key)}",
                status="failed_to_download" if failed else "success",
                error_message="HTTP Error 404: Not Found" if failed else None, width=width, height=height,
                original_width=width, original_height=height, exif=None if failed else "{}",
                sha256=None if failed else hashlib.sha256(image).hexdigest())


def write_hf_parquet(path: Path, images: list[bytes | None], labels: list[int] | None = None, embed: bool = True,
                     names: list[str | None] | None = None, ids: list[str] | None = None) -> Path:
    """A Hugging Face ``datasets`` export of ``images`` at ``path`` (module docstring). ``names``: each image's
    ``path`` (default ``img_<i>.png``; None: no path); ``ids``: an ``id`` column. A None image has neither bytes nor
    path (a row without an image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = names if names is not None else [f"img_{i}.png" for i in range(len(images))]
    cells = []
    for data, name in zip(images, names, strict=True):
        if data is None:
            cells.append({"bytes": None, "path": None})
        elif embed:
            cells.append({"bytes": data, "path": name})
        else:
            rel = f"images/{name}"
            (path.parent / rel).parent.mkdir(parents=True, exist_ok=True)
            (path.parent / rel).write_bytes(data)
            cells.append({"bytes": None, "path": rel})
    columns = {"image": pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
               "label": pa.array(labels if labels is not None else [i % 3 for i in range(len(images))], pa.int64())}
    if ids is not None:
        columns["id"] = pa.array(ids, pa.string())
    pq.write_table(pa.table(columns), path)
    return path


def write_csv_manifest(path: Path, files: list[Path], labels: list[str] | None = None) -> Path:
    """A CSV manifest at ``path`` listing ``files``, each as a path relative to the manifest's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["uri,label"] + [f"{os.path.relpath(f, path.parent)},{labels[i] if labels else ''}"
                             for i, f in enumerate(files)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_folder(folder: Path, images: list[bytes], names: list[str], ext: str = "jpg") -> list[Path]:
    """``images`` as the files ``folder/<name>.<ext>``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{name}.{ext}" for name in names]
    for f, data in zip(files, images, strict=True):
        f.write_bytes(data)
    return files
