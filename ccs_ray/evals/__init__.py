"""Evaluations of pruned models: zero-shot classification, text-to-video retrieval, social bias (MaxSkew).

``zeroshot``, ``video`` and ``bias`` are the math (no Ray, no I/O); the ``datasets`` package holds the
presets and loaders, one module per dataset kind (``datasets.classification``, ``datasets.video``,
``datasets.bias``). The ``prune`` stage (:mod:`ccs_ray.stages.prune`) runs them on Ray.
"""
