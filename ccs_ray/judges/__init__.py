"""Judges: label each head from its spans, judge each span 1/0 (``docs/architecture.md``, "Judge").

The parts the ``judge`` stage (:mod:`ccs_ray.stages.judge`) assembles: prompts and answer parsing
(``prompts``), the OpenAI-compatible client (``client``), one global rate limiter (``limiter``), the
answer cache (``cache``), single flight per request key (``flights``), the Ray pool (``pool``), the offline
heuristic judge (``offline``), human ratings (``human``, ``ccs-ray ratings``) and a loopback server with fault
injection (``loopback``).
Import from those modules: this package imports nothing, so that a judge worker does not load torch.
"""
