"""Video retrieval: frame sampling, pooling, R@k/MedR/MeanR by hand, frame folders and video files."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccs_ray.evals.datasets import DatasetError, load_video, plan_videos, video_captions, video_data
from ccs_ray.evals.retrieval import pool_frames, retrieval_metrics, retrieval_ranks, sample_frame_indices


def test_sample_frame_indices():
    assert sample_frame_indices(100, 4) == [12, 37, 62, 87]  # centres of 4 segments of 25 frames
    assert sample_frame_indices(3, 6) == [0, 0, 1, 1, 2, 2]
    assert sample_frame_indices(12, 12) == list(range(12))
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)


def test_pool_frames():
    frames = torch.tensor([[3., 4.], [0., 2.], [1., 0.]])  # video 0: 2 frames, video 1: 1 frame
    pooled = pool_frames(frames, [2, 1])
    v0 = torch.tensor([0.6 + 0.0, 0.8 + 1.0]) / 2
    torch.testing.assert_close(pooled[0], v0 / v0.norm())
    torch.testing.assert_close(pooled[1], torch.tensor([1., 0.]))


def test_retrieval_metrics_by_hand():
    # 60 videos on orthonormal directions; caption i points at video (i + shift_i) mod 60, and at video i
    # with a smaller weight, so the true video's rank is 1 + (number of videos placed above it)
    n = 60
    videos = torch.eye(n, dtype=torch.float64)
    true_rank = [1 + (i % 7) * 9 for i in range(n)]  # ranks 1, 10, 19, ..., 55
    texts = torch.zeros(n, n, dtype=torch.float64)
    for i, r in enumerate(true_rank):
        texts[i, i] = 1.0
        for j in range(r - 1):  # r - 1 other videos score higher
            texts[i, (i + 1 + j) % n] = 2.0 + j
    ranks = retrieval_ranks(texts, videos)
    assert ranks.tolist() == true_rank
    m = retrieval_metrics(texts, videos)
    r = np.array(true_rank)
    for k in (1, 5, 10, 50):
        assert m[f"R@{k}"] == pytest.approx(100 * (r <= k).mean())
    assert m["MedR"] == pytest.approx(float(np.median(r))) and m["MeanR"] == pytest.approx(r.mean())
    with pytest.raises(ValueError, match="one caption per video"):
        retrieval_metrics(texts[:5], videos)


COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def write_video(path, colors, size=32):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=6)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for c in colors:
            frame = av.VideoFrame.from_image(Image.new("RGB", (size, size), c))
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_frame_folders_video_files_and_first_caption(tmp_path):
    (tmp_path / "v0").mkdir()
    for i, c in enumerate(COLORS):
        Image.new("RGB", (16, 16), c).save(tmp_path / "v0" / f"{i:03d}.png")
    write_video(tmp_path / "v1.mp4", COLORS)
    (tmp_path / "caps.csv").write_text("video,caption\nv0,red first\nv1,a video\nv0,second caption\nv2,missing\n")
    data = video_data({"name": "toy", "source": str(tmp_path), "captions": "caps.csv", "frames": 3, "shard_size": 2})
    captions = video_captions(data)
    assert captions == [("v0", "red first"), ("v1", "a video"), ("v2", "missing")]
    assert [s.items for s in plan_videos(data, captions)] == [("v0", "v1"), ("v2",)]
    mean_rgb = lambda t: t.mean(dim=(2, 3))  # noqa: E731  [frames, 3] of a 'to tensor' preprocess
    to_tensor = lambda im: torch.from_numpy(np.asarray(im.convert("RGB").resize((8, 8)),  # noqa: E731
                                                       dtype=np.float32) / 255).permute(2, 0, 1)
    expected = torch.tensor([COLORS[i] for i in sample_frame_indices(6, 3)],
                            dtype=torch.float32) / 255  # frames 1, 3, 5
    for vid in ("v0", "v1"):
        frames = load_video(data, vid, to_tensor)
        assert frames.shape == (3, 3, 8, 8)
        torch.testing.assert_close(mean_rgb(frames), expected, atol=0.08, rtol=0)  # video codec error
    with pytest.raises(DatasetError, match="no frame folder or video file"):
        load_video(data, "v2", to_tensor)


def test_presets_and_errors(tmp_path):
    d = video_data({"name": "msrvtt", "source": str(tmp_path)})
    assert (d.frames, d.captions, d.video_column,
            d.caption_column) == (12, "MSRVTT_JSFUSION_test.csv", "video_id", "sentence")
    assert video_data({"name": "x", "preset": "DiDeMo", "source": "/v"}).frames == 32
    assert video_data({"name": "msvd", "source": "/v", "frames": 4}).frames == 4
    (tmp_path / "c.json").write_text('[{"vid": "a", "text": "t"}]')
    with pytest.raises(DatasetError, match="columns"):
        video_captions(video_data({"name": "y", "source": str(tmp_path), "captions": "c.json"}))
    with pytest.raises(DatasetError, match="no captions file"):
        video_data({"name": "z", "source": "/v"})
    assert math.isfinite(retrieval_metrics(torch.eye(2), torch.eye(2))["MeanR"])


def test_generated_videos_from_the_probe():
    from ccs_ray.sources import probe_class_texts
    from ccs_ray.sources.probe import probe_image

    data = video_data({"name": "gen", "source": "probe://shapes?n=5&seed=2&size=16", "frames": 3, "shard_size": 2})
    captions = video_captions(data)
    texts = probe_class_texts("shapes")
    assert captions == [(f"v{i}", f"a video of a {texts[i]}") for i in range(5)]
    assert [s.items for s in plan_videos(data, captions)] == [("v0", "v1"), ("v2", "v3"), ("v4",)]
    to_tensor = lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32))  # noqa: E731
    seen = set()
    for i in range(5):
        frames = load_video(data, f"v{i}", to_tensor)
        assert frames.shape == (3, 16, 16, 3)
        for frame in frames:  # each frame is a distinct probe image of the caption's class
            index = next(j for j in range(200) if torch.equal(frame, to_tensor(probe_image("shapes", j, 2, 16)[0])))
            assert probe_image("shapes", index, 2, 16)[1] == probe_class_texts("shapes")[i] and index not in seen
            seen.add(index)
    assert len(video_captions(video_data({"name": "gen", "source": "probe://shapes?n=5", "limit": 2}))) == 2
    with pytest.raises(DatasetError, match="one probe task"):
        video_data({"name": "gen", "source": "probe://?n=5"})


@pytest.mark.parametrize("ext", ["mp4", "webm"])  # webm streams carry no frame count: counted first
def test_long_video_converts_only_the_sampled_frames(tmp_path, monkeypatch, ext):
    import av

    palette = [(i * 2, 255 - i * 2, (i * 37) % 256) for i in range(120)]
    if ext == "mp4":
        write_video(tmp_path / "long.mp4", palette)
    else:
        with av.open(str(tmp_path / "long.webm"), "w") as out:
            stream = out.add_stream("libvpx", rate=6)
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            for c in palette:
                for packet in stream.encode(av.VideoFrame.from_image(Image.new("RGB", (32, 32), c))):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    (tmp_path / "caps.csv").write_text("video,caption\nlong,a long video\n")
    converted = []
    to_image = av.VideoFrame.to_image
    monkeypatch.setattr(av.VideoFrame, "to_image",
                        lambda frame, *a, **kw: converted.append(frame.pts) or to_image(frame, *a, **kw))
    data = video_data({"name": "toy", "source": str(tmp_path), "captions": "caps.csv", "frames": 4})
    to_tensor = lambda im: torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)  # noqa: E731
    frames = load_video(data, "long", to_tensor)
    assert len(converted) == 4  # not 120: memory does not grow with the video
    expected = torch.tensor([palette[i] for i in sample_frame_indices(120, 4)], dtype=torch.float32) / 255
    torch.testing.assert_close(frames.mean(dim=(2, 3)), expected, atol=0.1, rtol=0)
