"""Text-to-video retrieval: uniform frame sampling, pooled video embeddings, R@k / MedR / MeanR.

Frames are sampled at the centres of ``k`` equal segments of a video; frame embeddings are
L2-normalised, mean-pooled per video and normalised again. Caption i belongs to video i (one, the
first, caption per video). Recalls are in percent; ranks are 1-based.
"""

from __future__ import annotations

import torch

RECALL_AT = (1, 5, 10, 50)


def sample_frame_indices(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices of a video of ``n_frames``: the centre of each of k equal segments (repeats
    when the video is shorter than k frames)."""
    if n_frames < 1 or k < 1:
        raise ValueError(f"cannot sample {k} frames from a video of {n_frames} frames")
    return [min(n_frames - 1, int((i + 0.5) * n_frames / k)) for i in range(k)]


def pool_frames(frame_embeddings: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """[V, D] video embeddings from [sum(counts), D] frame embeddings, ``counts[v]`` frames per video."""
    if sum(counts) != frame_embeddings.shape[0]:
        raise ValueError(f"{frame_embeddings.shape[0]} frame embeddings but counts sum to {sum(counts)}")
    frames = frame_embeddings.float()
    frames = frames / frames.norm(dim=-1, keepdim=True)
    videos = torch.stack([chunk.mean(0) for chunk in frames.split(counts)])
    return videos / videos.norm(dim=-1, keepdim=True)


def retrieval_ranks(text_embeddings: torch.Tensor, video_embeddings: torch.Tensor) -> torch.Tensor:
    """[N] rank of video i for caption i by cosine similarity: 1 + the number of videos scoring higher."""
    t = text_embeddings.double() / text_embeddings.double().norm(dim=-1, keepdim=True)
    v = video_embeddings.double() / video_embeddings.double().norm(dim=-1, keepdim=True)
    sim = t @ v.T
    return 1 + (sim > sim.diagonal()[:, None]).sum(1)


def retrieval_metrics(text_embeddings: torch.Tensor, video_embeddings: torch.Tensor) -> dict[str, float]:
    """``R@1``, ``R@5``, ``R@10``, ``R@50`` (percent), ``MedR`` and ``MeanR`` of text-to-video retrieval."""
    if text_embeddings.shape != video_embeddings.shape or text_embeddings.shape[0] == 0:
        raise ValueError(f"need one caption per video: {tuple(text_embeddings.shape)} vs "
                         f"{tuple(video_embeddings.shape)}")
    ranks = retrieval_ranks(text_embeddings, video_embeddings).double()
    out = {f"R@{k}": 100 * (ranks <= k).double().mean().item() for k in RECALL_AT}
    out["MedR"] = ranks.quantile(0.5).item()  # the median, midpoint of the two middle ranks when N is even
    out["MeanR"] = ranks.mean().item()
    return out
