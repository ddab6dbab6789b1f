"""Weight files: the weights of ``NAME@PATH`` and ``local-dir:`` model keys, read in the formats users have them in
and checked against the model's architecture (preflight checks them without building the model).

Accepted files (:func:`read_state_dict`):

- an open_clip state dict saved with ``torch.save`` (any suffix: ``.pt``, ``.pth``, ``.bin``) or with
  ``safetensors.torch.save_file`` (``.safetensors``);
- a training checkpoint holding that state dict under ``"state_dict"``, ``"model"`` or ``"module"`` (nested ones
  too, e.g. ``{"epoch": 3, "state_dict": {...}}``), its keys possibly prefixed by DDP's ``module.`` or
  ``torch.compile``'s ``_orig_mod.``;
- an OpenAI TorchScript archive, the format of the original CLIP release: its state dict has open_clip's key names
  for ViTs; its metadata entries (``input_resolution``, ``context_length``, ``vocab_size``) are dropped.

A ``local-dir:`` folder is laid out like open_clip's ``hf-hub:`` repositories: ``open_clip_config.json`` (keys
``model_cfg`` and ``preprocess_cfg``) next to ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``
(else the one ``.safetensors``, ``.bin``, ``.pth`` or ``.pt`` file it holds), in any format above.

The architecture always comes from the key: NAME's open_clip config, or the folder's. The weights must fit it
exactly, the same keys with the same shapes (:func:`mismatch`); a file of another architecture is one error naming
its first difference. OpenAI's models were trained with QuickGELU: an OpenAI archive runs with it, as ``NAME/openai``
does (:func:`ccs_ray.models.load_model`).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import fsspec
import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from .errors import UserError
from .files import is_local
from .model_keys import UnsupportedModelError

#: Keys under which training checkpoints nest the model's state dict.
NESTING = ("state_dict", "model", "module")
#: Key prefixes added by wrappers: DDP (``module.``) and ``torch.compile`` (``_orig_mod.``).
PREFIXES = ("module.", "_orig_mod.")
#: Entries of OpenAI's TorchScript archives that are metadata, not weights.
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")
#: Weight files of a ``local-dir:`` folder, in order of preference (open_clip's ``hf-hub:`` names first).
FOLDER_WEIGHTS = (HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, "*.safetensors", "*.bin", "*.pth", "*.pt")


class CheckpointError(UserError, ValueError):
    """A weight file that cannot be read, or whose weights do not fit the model's architecture."""


def local_path(uri: str) -> str | None:
    """The path of ``uri`` when it names a local file (a plain path or ``file://``), else None."""
    fs, path = fsspec.core.url_to_fs(uri)
    return path if is_local(fs) else None


def folder_weights(folder: str) -> str:
    """The weight file of a ``local-dir:`` folder (:data:`FOLDER_WEIGHTS`)."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"folder {folder!r} not found")
    for pattern in FOLDER_WEIGHTS:
        found = sorted(Path(folder).glob(pattern))
        if found:
            return str(found[0])
    raise CheckpointError(f"folder {folder!r} holds no weights: expected {HF_SAFE_WEIGHTS_NAME} or {HF_WEIGHTS_NAME}")


def is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding compiled code, which torch.save files do not)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _load(path: str, shapes_only: bool) -> object:
    """The object stored in ``path``, on the CPU; ``shapes_only``: its tensors memory-mapped or on the meta device
    where the format allows, so that nothing but their shapes is read."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open
            from safetensors.torch import load_file

            if not shapes_only:
                return load_file(path)
            with safe_open(path, "pt") as f:
                return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        if is_torchscript(path):
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format of OpenAI's release
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(path, map_location="cpu").state_dict()
        return torch.load(path, map_location="cpu", weights_only=True, mmap=shapes_only and zipfile.is_zipfile(path))
    except Exception as e:  # torch and safetensors raise many kinds: all mean "not a checkpoint we read"
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a checkpoint (torch.save, safetensors or TorchScript): {why}") from None


def read_state_dict(path: str, shapes_only: bool = False) -> dict[str, torch.Tensor]:
    """The model state dict in weight file ``path``, in any accepted format, unnested, without wrapper prefixes and
    metadata (the module docstring). ``shapes_only``: read no more than the shapes where the format allows
    (safetensors headers, memory-mapped torch files); the tensors' values are not to be used then."""
    found = _load(path, shapes_only)
    while isinstance(found, Mapping):
        nested = next((found[k] for k in NESTING if isinstance(found.get(k), Mapping)), None)
        if nested is None:
            break
        found = nested
    if not isinstance(found, Mapping) or not found or not all(isinstance(v, torch.Tensor) for v in found.values()):
        what = f"keys {', '.join(map(str, list(found)[:5]))}" if isinstance(found, Mapping) else type(found).__name__
        raise CheckpointError(f"{path} holds no state dict of tensors (found {what or 'nothing'}; a training "
                              f"checkpoint should keep it under one of {', '.join(NESTING)})")
    state = {str(k): v for k, v in found.items() if k not in OPENAI_METADATA}
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def architecture(name: str) -> torch.nn.Module:
    """Model ``name`` (an open_clip name or ``local-dir:`` folder) on the meta device: its parameters' names and
    shapes without memory or weights."""
    try:
        with torch.device("meta"):
            return open_clip.create_model(name, load_weights=False, device="meta", pretrained_text=False)
    except (TypeError, KeyError, RuntimeError) as e:  # a config open_clip cannot build
        raise UnsupportedModelError(f"open_clip cannot build {name}: {e}") from None


def _shape(shape: torch.Size) -> str:
    return str(list(shape))


def mismatch(state: Mapping[str, torch.Tensor], model: torch.nn.Module, name: str) -> str | None:
    """How ``state`` does not fit ``model`` (built for ``name``), or None: the first parameter whose shape differs,
    else the first missing key, else the first unexpected one, each with a count of the others."""
    expected = model.state_dict()
    for key, param in expected.items():
        if key in state and state[key].shape != param.shape:
            return f"{key} has shape {_shape(state[key].shape)}, {name} needs {_shape(param.shape)}"
    skipped = {k for k, _ in model.named_buffers() if k not in expected}  # non-persistent (traced archives hold them)
    for what, keys in (("missing", [k for k in expected if k not in state]),
                       ("unexpected", [k for k in state if k not in expected and k not in skipped])):
        if keys:
            return f"{what} key {keys[0]}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")
    return None


def fit(state: dict[str, torch.Tensor], model: torch.nn.Module, name: str, path: str) -> dict[str, torch.Tensor]:
    """``state`` as ``model.load_state_dict`` takes it (non-persistent buffers dropped), or a CheckpointError naming
    the first mismatch."""
    problem = mismatch(state, model, name)
    if problem:
        raise CheckpointError(f"checkpoint {path} does not fit {name}: {problem}")
    expected = model.state_dict()
    return {k: v for k, v in state.items() if k in expected}


def check_weights(path: str, name: str) -> None:
    """Preflight's check of weight file ``path`` for model ``name``, without building the model or reading the
    weights: a CheckpointError (or FileNotFoundError) when it is not a checkpoint or does not fit."""
    fit(read_state_dict(path, shapes_only=True), architecture(name), name, path)


def load_weights(model: torch.nn.Module, path: str, name: str) -> None:
    """Load weight file ``path`` into ``model`` (built for ``name``), after checking it fits."""
    model.load_state_dict(fit(read_state_dict(path), model, name, path), strict=True)
