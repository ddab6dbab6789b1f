"""Evaluations of pruned models: zero-shot classification, text-to-video retrieval, social bias (MaxSkew).

``zeroshot``, ``video`` and ``bias`` are the math (no Ray, no I/O); ``datasets`` holds the presets and
loaders; ``runner`` runs the pruning stage on Ray.
"""
