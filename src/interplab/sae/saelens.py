"""Save and load SAEs in the SAELens 6 file layout, without depending on sae-lens.

A directory holds ``cfg.json`` and ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``,
``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``, as SAELens 6 ``SAE.save_model``
writes them and ``SAE.load_from_disk`` reads them (its default disk loader). We write the
SAE's architecture (``standard``, ``topk`` with ``k``, ``jumprelu`` with a ``threshold
[d_sae]`` tensor), its ``apply_b_dec_to_input`` and ``metadata.sae_lens_version`` 6.0.0, so
SAELens takes it as a 6.x config and applies no legacy renaming. Our own settings (the site's
position, the activation scale) live under ``metadata`` keys that SAELens keeps as free-form
metadata. An SAE trained on normalised activations (``act_scale`` s != 1) is written as the
function of the raw activations SAELens expects (``W_enc * s``, ``W_dec / s``, ``b_dec / s``,
``normalize_activations: none``) and unfolded again on loading.

Loading accepts SAELens ``standard``, ``topk`` and ``jumprelu`` SAEs (formats read from the
SAELens 6 sources: ``TopK`` keeps the ``k`` largest pre-activations then applies ReLU;
``JumpReLU`` is ``ReLU(pre) * (pre > threshold)``), including pre-6.0 configs
(``hook_point``) and ``apply_b_dec_to_input: false`` (kept as is). For ``standard`` and
``jumprelu`` SAEs decoder row norms are folded into the encoder (and the threshold) so that
our unit-norm invariant holds and the SAE computes the same function; a ``topk`` SAE keeps its
decoder as it is, because rescaling pre-activations would change which ``k`` win.

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
        "interplab_act_scale": sae.cfg.act_scale,
    }
    metadata.update(extra or {})
    cfg = {
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": dtype_name(sae.W_dec.dtype),
        "device": str(sae.W_dec.device),
        "apply_b_dec_to_input": sae.cfg.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "architecture": sae.cfg.architecture,
        "metadata": metadata,
    }
    if sae.cfg.architecture == "topk":
        cfg["k"] = sae.cfg.k
    return cfg


def save_saelens(sae: SAE, path: PathLike, model_name: str = "", extra: dict[str, Any] | None = None) -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` into directory ``path`` (atomically).

    Example: see the module docstring.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    names = ("W_enc", "W_dec", "b_enc", "b_dec") + (("threshold",) if sae.cfg.architecture == "jumprelu" else ())
    tensors = {k: getattr(sae, k).detach().float() for k in names}
    scale = sae.cfg.act_scale
    if scale != 1.0:  # the function of raw activations: f(s x), x_hat / s
        tensors["W_enc"], tensors["W_dec"], tensors["b_dec"] = (tensors["W_enc"] * scale, tensors["W_dec"] / scale,
                                                              tensors["b_dec"] / scale)
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
    check(arch in ("standard", "topk", "jumprelu"), f"{path} holds a {arch!r} SAE; only the 'standard', 'topk' "
          "and 'jumprelu' architectures can be loaded.")
    norm = cfg.get("normalize_activations", "none")
    check(norm in ("none", None), f"{path} needs activation normalization {norm!r}, which interplab does not apply.")
    check(cfg.get("reshape_activations", "none") in ("none", None), f"{path} reshapes activations (hook_z), "
          "which interplab does not support.")
    act = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    if act == "topk" and arch == "standard":  # pre-6.0 configs: topk as an activation function
        arch, cfg = "topk", {**cfg, "k": (cfg.get("activation_fn_kwargs") or {}).get("k", cfg.get("k"))}
    check(act in ("relu", "topk"), f"{path} uses activation {act!r}; only ReLU-based SAEs can be loaded.")
    check(arch != "topk" or isinstance(cfg.get("k"), int), f"{path / CFG_FILENAME} is a topk SAE without an integer k.")
    check("d_in" in cfg and "d_sae" in cfg, f"{path / CFG_FILENAME} lacks d_in or d_sae.")
    w = load_tensors(path / WEIGHTS_FILENAME)
    needed = {"W_enc", "W_dec", "b_enc", "b_dec"} | ({"threshold"} if arch == "jumprelu" else set())
    check(needed <= set(w), f"{path / WEIGHTS_FILENAME} lacks {', '.join(sorted(needed - set(w)))}.")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_enc": (d_sae,), "b_dec": (d_in,), "threshold": (d_sae,)}
    for k, shape in shapes.items():
        if k not in needed:
            continue
        check(tuple(w[k].shape) == shape, f"{path / WEIGHTS_FILENAME}: {k} has shape {tuple(w[k].shape)}, "
              f"the config says {shape}.")
    W_enc, W_dec, b_enc, b_dec = (w[k].float() for k in ("W_enc", "W_dec", "b_enc", "b_dec"))
    check("scaling_factor" not in w or bool(torch.allclose(w["scaling_factor"].float(), torch.ones(1))),
          f"{path} holds a finetuning scaling factor, which interplab does not apply.")
    threshold = w["threshold"].float() if arch == "jumprelu" else None
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", True))
    scale = float(meta.get("interplab_act_scale", 1.0))
    if scale != 1.0:  # undo save_saelens's folding of our normalisation
        W_enc, W_dec, b_dec = W_enc / scale, W_dec * scale, b_dec * scale
    norms = W_dec.norm(dim=1).clamp_min(1e-12)
    if arch != "topk" and not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
        W_dec, W_enc, b_enc = W_dec / norms[:, None], W_enc * norms[None, :], b_enc * norms
        if threshold is not None:
            threshold = threshold * norms
    hook = cfg.get("hook_name") or meta.get("hook_name") or cfg.get("hook_point") or ""
    position = meta.get("interplab_position")
    sae = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, hook_name=str(hook),
                        position=None if position is None else int(position), architecture=arch,
                        k=int(cfg["k"]) if arch == "topk" else None, apply_b_dec_to_input=apply_b_dec,
                        act_scale=scale), seed=int(meta.get("interplab_seed", 0)))
    values = {"W_enc": W_enc, "W_dec": W_dec, "b_enc": b_enc, "b_dec": b_dec}
    if threshold is not None:
        values["threshold"] = threshold
    with torch.no_grad():
        for name, value in values.items():
            getattr(sae, name).copy_(value)
    return sae
