"""Save and load SAEs in the SAELens 6 file layout, without depending on sae-lens.

A directory holds ``cfg.json`` and ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``,
``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``, as SAELens 6 ``SAE.save_model``
writes them and ``SAE.load_from_disk`` reads them (its default disk loader). We write a
``standard`` architecture config with ``apply_b_dec_to_input: true`` and
``metadata.sae_lens_version`` 6.0.0, so SAELens takes it as a 6.x config and applies no
legacy renaming. Our own settings (the site's position) live under ``metadata`` keys that
SAELens keeps as free-form metadata.

Loading accepts SAELens ``standard`` SAEs, including pre-6.0 configs (``hook_point``) and
``apply_b_dec_to_input: false`` (folded into ``b_enc``); decoder row norms are folded into the
encoder so that our unit-norm invariant holds and the SAE computes the same function.

Example:
    >>> import tempfile, torch
    >>> from interplab.sae.model import SAE, SAEConfig
    >>> sae = SAE(SAEConfig(d_in=4, d_sae=8, hook_name="blocks.0.mlp.hook_post", position=-1), seed=1)
    >>> d = save_saelens(sae, tempfile.mkdtemp(), model_name="modular")
    >>> sorted(p.name for p in d.iterdir())
    ['cfg.json', 'sae_weights.safetensors']
    >>> back = load_saelens(d)
    >>> back.cfg == sae.cfg, bool(torch.equal(back.W_enc, sae.W_enc))
    (True, True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from interplab.devices import dtype_name
from interplab.errors import check
from interplab.io import PathLike, atomic_write_json, load_tensors, read_json, save_tensors
from interplab.sae.model import SAE, SAEConfig

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
FORMAT_VERSION = "6.0.0"  # the SAELens config format we write (any 6.x reader takes it)


def saelens_config(sae: SAE, model_name: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``cfg.json`` contents for ``sae`` (an SAELens 6 ``standard`` config).

    Example:
        >>> from interplab.sae.model import SAE, SAEConfig
        >>> c = saelens_config(SAE(SAEConfig(d_in=4, d_sae=8)))
        >>> c["architecture"], c["d_in"], c["d_sae"], c["metadata"]["sae_lens_version"]
        ('standard', 4, 8, '6.0.0')
    """
    metadata: dict[str, Any] = {
        "sae_lens_version": FORMAT_VERSION,
        "sae_lens_training_version": FORMAT_VERSION,
        "model_name": model_name,
        "hook_name": sae.cfg.hook_name,
        "hook_head_index": None,
        "interplab_position": sae.cfg.position,
        "interplab_seed": sae.seed,
    }
    metadata.update(extra or {})
    return {
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": dtype_name(sae.W_dec.dtype),
        "device": str(sae.W_dec.device),
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "architecture": "standard",
        "metadata": metadata,
    }


def save_saelens(sae: SAE, path: PathLike, model_name: str = "", extra: dict[str, Any] | None = None) -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` into directory ``path`` (atomically).

    Example: see the module docstring.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: getattr(sae, k).detach().float() for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
    save_tensors(path / WEIGHTS_FILENAME, tensors)
    atomic_write_json(path / CFG_FILENAME, saelens_config(sae, model_name, extra))
    return path


def load_saelens(path: PathLike) -> SAE:
    """Load an SAELens-layout directory (ours or SAELens's) as an :class:`SAE`.

    Example: see the module docstring.
    """
    path = Path(path)
    check(path.is_dir(), f"SAE directory {path} does not exist.")
    cfg = read_json(path / CFG_FILENAME)
    check(isinstance(cfg, dict), f"{path / CFG_FILENAME} is not an SAELens config.")
    meta = cfg.get("metadata") or {}
    arch = cfg.get("architecture", "standard")
    check(arch == "standard", f"{path} holds a {arch!r} SAE; only the 'standard' architecture (ReLU) can be loaded.")
    norm = cfg.get("normalize_activations", "none")
    check(norm in ("none", None), f"{path} needs activation normalization {norm!r}, which interplab does not apply.")
    check(cfg.get("reshape_activations", "none") in ("none", None), f"{path} reshapes activations (hook_z), "
          "which interplab does not support.")
    act = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    check(act == "relu", f"{path} uses activation {act!r}; only ReLU SAEs can be loaded.")
    check("d_in" in cfg and "d_sae" in cfg, f"{path / CFG_FILENAME} lacks d_in or d_sae.")
    w = load_tensors(path / WEIGHTS_FILENAME)
    needed = {"W_enc", "W_dec", "b_enc", "b_dec"}
    check(needed <= set(w), f"{path / WEIGHTS_FILENAME} lacks {', '.join(sorted(needed - set(w)))}.")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,)}
    for k, shape in shapes.items():
        check(tuple(w[k].shape) == shape, f"{path / WEIGHTS_FILENAME}: {k} has shape {tuple(w[k].shape)}, "
              f"the config says {shape}.")
    W_enc, W_dec, b_enc, b_dec = (w[k].float() for k in ("W_enc", "W_dec", "b_enc", "b_dec"))
    check("scaling_factor" not in w or bool(torch.allclose(w["scaling_factor"].float(), torch.ones(1))),
          f"{path} holds a finetuning scaling factor, which interplab does not apply.")
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ W_enc  # x @ W_enc + b = (x - b_dec) @ W_enc + (b + b_dec @ W_enc)
    norms = W_dec.norm(dim=1).clamp_min(1e-12)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
        W_dec, W_enc, b_enc = W_dec / norms[:, None], W_enc * norms[None, :], b_enc * norms
    hook = cfg.get("hook_name") or meta.get("hook_name") or cfg.get("hook_point") or ""
    position = meta.get("interplab_position")
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, hook_name=str(hook),
                        position=None if position is None else int(position)), seed=int(meta.get("interplab_seed", 0)))
    with torch.no_grad():
        for name, value in (("W_enc", W_enc), ("W_dec", W_dec), ("b_enc", b_enc), ("b_dec", b_dec)):
            getattr(sae, name).copy_(value)
    return sae
