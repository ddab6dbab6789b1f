"""CLIP text embeddings: :func:`text_embeddings` (a model's text tower over a list of texts) and
:class:`TextEncoder` (the same, each text encoded once per model, template and normalisation, optionally
persisted under a folder).

:func:`text_embeddings` returns [M, D] float32 on the CPU: line i is ``model.encode_text`` of the tokens of
``template.format(texts[i])``, L2-normalised when ``normalize``.

Truncation. The open_clip tokenizer pads every text to the full context (77 tokens) while pool texts, class
prompts and keywords are 3-20 tokens long. The stock CLIP text path (``open_clip.CLIP.encode_text`` with
``text_pool_type == 'argmax'`` and a causal ``attn_mask``) is token embedding + positional embedding ->
transformer under the causal mask -> ``ln_final`` -> the row at the ``argmax`` of the tokens (the end-of-text
token, the largest id) -> ``text_projection``. Under a causal mask the output at position p depends only on
positions <= p, and layer norm and the projection act per position, so the pooled row at the EOT position e
is the same whatever follows e. Keeping a batch's first max(e) + 1 positions therefore gives the stock
result up to float rounding (the argmax itself is unchanged: nothing after the first maximum can move it).
Texts are sorted by token length so that each batch is cut at its own longest text; rows come back in input
order. A model whose text path is anything else (another pool type, no causal mask, a custom text tower) is
encoded by its own ``encode_text`` on the full tokens.

Cache (:class:`TextEncoder` with ``cache_dir``, any fsspec URI): one sub-folder per (template, normalize),
named by a short hash of both, holding append-only parts ``part-<32 hex>.npz`` (arrays ``embeddings``
[n, D] float32 and ``meta``, a JSON string with ``model``, ``precision``, ``template``, ``normalize`` and the
n ``texts``), each written atomically (:func:`ccs_ray.files.atomic_write`). An encoder reads a sub-folder the
first time it is asked for its (template, normalize) and writes one part per call that encoded texts. It takes
every part whose meta matches its model, precision, template and normalisation, and skips files that are not
parts (an interrupted writer's temporary file) or that do not parse (a copy cut short); a text in several
parts takes its first part's row.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
import zipfile

import fsspec
import numpy as np
import torch

from .files import atomic_write, folder_files

#: Texts per forward pass of the text tower.
BATCH_SIZE = 256
_PART = re.compile(r"^part-[0-9a-f]{32}\.npz$")


def _truncatable(model) -> bool:
    """Whether ``model`` encodes text by the stock causal, argmax-pooled CLIP path (module docstring)."""
    from open_clip.model import CLIP  # imported on use: open_clip takes seconds to import

    mask = getattr(model, "attn_mask", None)
    return (type(model).encode_text is CLIP.encode_text and model.text_pool_type == "argmax"
            and mask is not None and mask.ndim == 2
            and torch.equal(torch.isneginf(mask), torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)))


def _encode_truncated(model, tokens: torch.Tensor, normalize: bool) -> torch.Tensor:
    """``model.encode_text(tokens, normalize)`` on ``tokens`` [B, L] cut after the batch's last EOT position."""
    n = int(tokens.argmax(dim=-1).max()) + 1
    tokens = tokens[:, :n]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:n].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:n, :n]))
    x = x[torch.arange(len(x), device=x.device), tokens.argmax(dim=-1)]  # open_clip's 'argmax' pool: the EOT rows
    if isinstance(model.text_projection, torch.nn.Linear):
        x = model.text_projection(x)
    elif model.text_projection is not None:
        x = x @ model.text_projection
    return torch.nn.functional.normalize(x, dim=-1) if normalize else x


def text_embeddings(model, texts: list[str], template: str = "{}", normalize: bool = True,
                    batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """[M, D] float32 CPU text embeddings: each line through ``template``, then L2-normalised when ``normalize``
    (module docstring; the model runs on its own device and precision).

    The defaults follow clip_text_span: lines encoded as they are, normalised.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("model has no tokenizer: load it with ccs_ray.load_model")
    if not texts:
        return torch.zeros(0, model.visual.proj.shape[1])
    device = next(model.parameters()).device
    tokens = tokenizer([template.format(t) for t in texts])
    truncate = _truncatable(model)
    order = torch.argsort(tokens.argmax(dim=-1), stable=True) if truncate else torch.arange(len(texts))
    out: torch.Tensor | None = None
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            rows = order[i:i + batch_size]
            batch = tokens[rows].to(device)
            emb = (_encode_truncated(model, batch, normalize) if truncate
                   else model.encode_text(batch, normalize=normalize)).float().cpu()
            if out is None:
                out = torch.empty(len(texts), emb.shape[1])
            out[rows] = emb
    assert out is not None  # texts is not empty
    return out


class TextEncoder:
    """``texts -> [N, D]`` float32 CPU embeddings of one model's text tower (:func:`text_embeddings`), each
    (template, normalize, text) encoded once: memoised here and, with ``cache_dir`` (an fsspec URI), persisted
    there (module docstring) for every later encoder on the same folder.

    The model is ``model`` when given, else this process's :func:`~ccs_ray.models.shared_model`, taken on the
    first text not found. ``encoded``: how many texts went through the model.
    """

    def __init__(self, model_key: str, precision: str, cache_dir: str | None = None, model=None):
        self.model_key, self.precision, self.model = model_key, precision, model
        self.cache_dir = cache_dir.rstrip("/") if cache_dir else None
        self.encoded = 0
        self._memo: dict[tuple[str, bool], dict[str, torch.Tensor]] = {}

    def load(self):
        """The model, loaded once."""
        if self.model is None:
            from .models import shared_model

            self.model = shared_model(self.model_key, self.precision)
        return self.model

    def __call__(self, texts: list[str], template: str = "{}", normalize: bool = True) -> torch.Tensor:
        """[N, D] float32: row i is the embedding of ``template.format(texts[i])``, L2-normalised when
        ``normalize``; texts not seen before are encoded in one :func:`text_embeddings` call."""
        key = (template, bool(normalize))
        memo = self._entries(key)
        missing = list(dict.fromkeys(t for t in texts if t not in memo))
        if missing:
            emb = text_embeddings(self.load(), missing, *key)
            self.encoded += len(missing)
            memo.update(zip(missing, emb, strict=True))
            if self.cache_dir:
                self._write(key, missing, emb)
        if not texts:
            known = next((row for rows in self._memo.values() for row in rows.values()), None)
            return torch.zeros(0, len(known)) if known is not None else text_embeddings(self.load(), [])
        return torch.stack([memo[t] for t in texts])

    def _folder(self, key: tuple[str, bool]) -> str:
        return f"{self.cache_dir}/{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}"

    def _meta(self, key: tuple[str, bool]) -> dict:
        return {"model": self.model_key, "precision": self.precision, "template": key[0], "normalize": key[1]}

    def _entries(self, key: tuple[str, bool]) -> dict[str, torch.Tensor]:
        """The memo of (template, normalize), first filled from the cache folder's parts."""
        if key not in self._memo:
            self._memo[key] = self._read(key) if self.cache_dir else {}
        return self._memo[key]

    def _read(self, key: tuple[str, bool]) -> dict[str, torch.Tensor]:
        """text -> [D] row of every readable part of ``key``'s folder (module docstring)."""
        want = self._meta(key)
        fs, path = fsspec.core.url_to_fs(self._folder(key))
        found: dict[str, torch.Tensor] = {}
        for name in sorted(n for n in folder_files(fs, path) if _PART.match(n)):
            try:
                with fs.open(f"{path}/{name}", "rb") as f:
                    blob = f.read()
                with np.load(io.BytesIO(blob), allow_pickle=False) as part:
                    emb, meta = torch.from_numpy(part["embeddings"].astype(np.float32)), json.loads(str(part["meta"]))
                texts = meta.pop("texts")
            except (zipfile.BadZipFile, ValueError, EOFError, OSError, KeyError):
                continue  # cut short, or removed since the listing
            if meta != want or emb.ndim != 2 or len(texts) != len(emb):
                continue
            for t, row in zip(texts, emb, strict=True):
                found.setdefault(t, row)
        return found

    def _write(self, key: tuple[str, bool], texts: list[str], emb: torch.Tensor) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, embeddings=emb.numpy(), meta=np.array(json.dumps({**self._meta(key), "texts": texts})))
        atomic_write(f"{self._folder(key)}/part-{uuid.uuid4().hex}.npz", buffer.getvalue())
