"""Evaluations of pruned models: zero-shot classification, text-to-video retrieval, social bias (MaxSkew).

``zeroshot``, ``video`` and ``bias`` are the math (no Ray, no I/O); the ``datasets`` package holds the
presets and loaders, one module per dataset kind (``datasets.classification``, ``datasets.video``,
``datasets.bias``). ``kinds`` is the registry of evaluation kinds (text side, a unit's encoding, the table
rows), ``units`` the units of work and the eval workers that run them, ``dispatch`` the rule that hands units
to replaceable workers. The ``prune`` stage (:mod:`ccs_ray.stages.prune`) runs them on Ray.
"""
