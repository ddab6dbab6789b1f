"""Text-to-video retrieval datasets (``[[evals.video]]``): captions, shards of video ids, sampled frames.

A source is a folder with one frame folder or one video file (any of :data:`VIDEO_EXTENSIONS`, decoded
with PyAV; a video id may carry its own extension) per video, and a captions file (relative to the source
unless a URI) whose first caption per video is used: CSV/TSV, Parquet, JSON list or JSON lines with a
video and a caption column (a caption cell may be a list), or a pickle of ``{video id: [caption, ...]}``
where a caption is a string or a list of words. A generated set (``probe://TASK?n=..``) has ``n`` videos
``v0``..``v<n-1>`` of probe images of one class each, captioned ``"a video of a <class text>"``.

A preset reads its dataset's official layout from the dataset's folder (the source); a missing file or
folder is a DatasetError naming it:

- ``msrvtt``: ``MSRVTT_JSFUSION_test.csv`` (the 1k-A test split retrieval work uses: columns ``key,
  vid_key, video_id, sentence``, one row per video ``video7010``..``video9999``) and the videos
  ``<video_id>.mp4`` in ``videos/all/`` (the release's archive) or ``MSRVTT_Videos/`` (CLIP4Clip's).
- ``msvd``: CLIP4Clip's annotations ``raw-captions.pkl`` (video id -> captions as word lists) and
  ``test_list.txt`` (the 670 test ids, one a line, in order), and the release's ``YouTubeClips/``
  (``<youtube id>_<start>_<end>.avi``).
- ``didemo``: ``test_data.json`` (a list of moments: ``annotation_id, description, video, times,
  download_link, num_segments``; a video has several) and the videos in ``videos/`` or
  ``DiDeMo_Videos/``, named as the ``video`` field (with its original extension, e.g. ``.mov``,
  optionally followed by ``.mp4`` when transcoded).

:func:`video_data` validates an entry and applies its preset (:mod:`.presets`); :func:`video_captions`
reads the captions, :func:`video_folder` finds the videos, :func:`plan_videos` cuts them into shards and
:func:`load_video` samples one video's frames uniformly.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import fsspec
import torch

from ... import sources
from ...files import read_table_file, resolve_uri
from ...sources.base import IMAGE_EXTENSIONS, fingerprint
from ...sources.probe import ProbeSpec, probe_image
from ..retrieval import sample_frame_indices
from .entries import DatasetError, probe_of
from .presets import VIDEO_PRESETS, Layout, entry_with_preset

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


@dataclass
class VideoData:
    """One text-to-video retrieval dataset: the keys of :class:`~ccs_ray.spec.VideoEntry`, resolved."""

    name: str
    source: str  # folder of videos or frame folders
    preset: str | None
    captions: str | None  # CSV / TSV / Parquet / JSON / JSONL, relative to source unless a URI
    frames: int | None
    video_column: str
    caption_column: str
    shard_size: int  # videos per shard
    limit: int | None
    layout: Layout | None = None  # the preset's official layout


def video_data(entry) -> VideoData:
    """Validate an ``evals.video`` entry (typed or a dict) and apply its preset (default: the name, when it names
    one)."""
    data, _ = entry_with_preset(VideoData, entry, "video", VIDEO_PRESETS, "folder")
    data.frames = data.frames or 12
    if not data.captions and probe_of(data.source, "video") is None:
        raise DatasetError(f"video dataset {data.name!r}: no captions file (give 'captions' or a preset: "
                           f"{', '.join(VIDEO_PRESETS)})")
    return data


def video_captions(data: VideoData) -> list[tuple[str, str]]:
    """(video id, first caption) per video, in captions-file order (a layout with a split file: the split's
    videos, in its order), at most ``limit``; rows with no video id or no caption (an empty value, an empty
    list) are skipped."""
    probe = probe_of(data.source, "video")
    if probe is not None:
        texts = sources.probe_class_texts(probe.task)
        return [(f"v{i}", f"a video of a {texts[i % len(texts)]}") for i in range(min(probe.n, data.limit or probe.n))]
    assert data.captions, "video_data gives a set that is not generated a captions file"
    uri = resolve_uri(data.captions, data.source)
    first: dict[str, str] = {}
    for video, caption in _caption_rows(data, uri):
        if isinstance(caption, list):
            caption = caption[0] if caption else None
        if isinstance(caption, list):  # a caption written as a list of words
            caption = " ".join(map(str, caption))
        if video is not None and caption is not None:
            first.setdefault(str(video), str(caption))
    if data.layout and data.layout.split:
        first = _split(data, first)
    pairs = list(first.items())[: data.limit]
    if not pairs:
        raise DatasetError(f"{uri}: no captions")
    return pairs


def _caption_rows(data: VideoData, uri: str) -> list[tuple]:
    """(video id, caption cell) per row of the captions file, in file order."""
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.isfile(path):
        raise DatasetError(_missing(data, data.captions, "captions file", uri))
    if uri.lower().endswith(".pkl"):
        with fs.open(path, "rb") as f:
            try:
                table = _PlainUnpickler(f).load()
            except (pickle.UnpicklingError, EOFError, ValueError) as e:
                raise DatasetError(f"{uri}: not a pickle of video id -> captions ({e})") from None
        if not isinstance(table, dict):
            raise DatasetError(f"{uri}: expected a pickled dict of video id -> captions, got {type(table).__name__}")
        return list(table.items())
    try:
        rows = read_table_file(uri).to_pylist()
    except ValueError as e:  # an unsupported file type, or JSON that is not a list of objects
        raise DatasetError(str(e)) from e
    if rows and (data.video_column not in rows[0] or data.caption_column not in rows[0]):
        raise DatasetError(f"{uri}: rows need columns {data.video_column!r} and {data.caption_column!r}; "
                           f"got {sorted(rows[0])}")
    return [(row.get(data.video_column), row.get(data.caption_column)) for row in rows]


class _PlainUnpickler(pickle.Unpickler):
    """Reads pickles of plain data (dicts, lists, strings) only: a pickle naming any class or function is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only dicts, lists and strings are read")


def _split(data: VideoData, captions: dict[str, str]) -> dict[str, str]:
    """The captions of the videos the layout's split file lists, in its order."""
    assert data.layout and data.layout.split
    uri = resolve_uri(data.layout.split, data.source)
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.isfile(path):
        raise DatasetError(_missing(data, data.layout.split, "split list", uri))
    ids = [line.strip() for line in fs.cat_file(path).decode("utf-8").splitlines() if line.strip()]
    missing = [v for v in ids if v not in captions]
    if missing:
        raise DatasetError(f"{data.name}: {len(missing)} videos of {uri} have no caption in {data.captions} "
                           f"(e.g. {missing[0]!r})")
    return {v: captions[v] for v in ids}


def _missing(data: VideoData, name: str | None, what: str, uri: str) -> str:
    """The error of a file or folder the dataset needs and does not have."""
    if data.layout:
        return f"{data.name}: no {name} in {data.source} (expected {data.layout.release})"
    return f"video dataset {data.name!r}: no {what} {uri}"


def video_folder(data: VideoData) -> str:
    """The folder holding the videos: the source, or the first of its layout's video folders that exists."""
    if not data.layout or not data.layout.videos:
        return data.source
    fs, root = fsspec.core.url_to_fs(data.source)
    for name in data.layout.videos:
        if fs.isdir(f"{root.rstrip('/')}/{name}"):
            return resolve_uri(name, data.source)
    raise DatasetError(_missing(data, " or ".join(f"{v}/" for v in data.layout.videos), "video folder", data.source))


def plan_videos(data: VideoData, captions: list[tuple[str, str]]) -> list[sources.Shard]:
    """Shards of ``shard_size`` videos of :func:`video_folder`; items are video ids."""
    ids = [v for v, _ in captions]
    folder = data.source if probe_of(data.source, "video") else video_folder(data)
    return [sources.Shard(f"s{i:06d}", i, "video", folder, tuple(ids[s:s + data.shard_size]),
                          fingerprint(folder, ids[s:s + data.shard_size], data.frames))
            for i, s in enumerate(range(0, len(ids), data.shard_size))]


def load_video(data: VideoData, video_id: str, preprocess) -> torch.Tensor:
    """[frames, 3, S, S]: ``data.frames`` frames sampled uniformly from a frame folder or a video file
    (a generated video: its ``data.frames`` probe images)."""
    assert data.frames is not None, "video_data resolves the frame count"
    probe = probe_of(data.source, "video")
    if probe is not None:
        return torch.stack([preprocess(frame) for frame in _probe_video(probe, video_id, data.frames)])
    folder = video_folder(data)
    fs, root = fsspec.core.url_to_fs(folder)
    base = f"{root.rstrip('/')}/{video_id}"
    if fs.isdir(base):
        files = sorted(p for p in fs.ls(base, detail=False) if p.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DatasetError(f"frame folder {base} has no images")
        picked = [files[i] for i in sample_frame_indices(len(files), data.frames)]
        frames = [sources.decode_image(fs.cat_file(p))[0] for p in picked]
    else:
        candidates = [base] + [base + ext for ext in VIDEO_EXTENSIONS]
        path = next((p for p in candidates if fs.isfile(p)), None)
        if path is None:
            raise DatasetError(f"video {video_id!r}: no frame folder or video file ({', '.join(VIDEO_EXTENSIONS)}) "
                               f"under {folder}")
        with fs.open(path, "rb") as f:
            frames = _decode_video(f, data.frames)
    return torch.stack([preprocess(frame) for frame in frames])


def _probe_video(probe: ProbeSpec, video_id: str, frames: int) -> list:
    """Frames of generated video ``v<i>``: probe images i + j * stride (j < frames), all of class i."""
    n_classes = len(sources.probe_classes(probe.task))
    i = int(video_id[1:])
    stride = n_classes * -(-probe.n // n_classes)  # a multiple of the class count above every video index
    return [probe_image(probe.task, i + j * stride, probe.seed, probe.size)[0] for j in range(frames)]


def _decode_video(file, k: int) -> list:
    """``k`` uniformly sampled frames (PIL RGB) of a seekable video file, decoded with PyAV.

    Only the sampled frames are converted to images, so memory does not grow with the video's length.
    The indices come from the stream's frame count; when that is missing (e.g. WebM) or wrong, a first
    pass counts the decodable frames and a second one picks them.
    """
    import av

    with av.open(file) as container:
        expected = container.streams.video[0].frames
    if expected > 0:
        frames, n = _pick_frames(file, sample_frame_indices(expected, k))
        if n == expected:
            return frames
    n = _pick_frames(file, [])[1]
    if n == 0:
        raise DatasetError("video has no decodable frames")
    return _pick_frames(file, sample_frame_indices(n, k))[0]


def _pick_frames(file, indices: list[int]) -> tuple[list, int]:
    """(the frames at ``indices`` as PIL RGB images, in ``indices`` order; the number of frames decoded)."""
    import av

    file.seek(0)
    wanted, picked, n = set(indices), {}, 0
    with av.open(file) as container:
        for n, frame in enumerate(container.decode(video=0), 1):
            if n - 1 in wanted:
                picked[n - 1] = frame.to_image().convert("RGB")
    return ([picked[i] for i in indices] if set(picked) == wanted else []), n
