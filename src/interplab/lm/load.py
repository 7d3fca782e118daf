"""Load a real causal language model as a hooked model with TransformerLens site names.

:func:`load` boots a Hugging Face checkpoint through TransformerLens 4's
``TransformerBridge.boot_transformers`` and switches on its compatibility mode
(``enable_compatibility_mode``: LayerNorm folded into the next weights, writing weights and
the unembedding centred, the legacy ``HookedTransformer`` site names such as
``blocks.0.hook_resid_pre`` and ``blocks.0.attn.hook_z``). Every analysis in interplab then
sees it through those names, like the models trained here.

A local directory (``config.json``, weights, tokenizer files, as written by
``save_pretrained``) loads offline; any other name is looked up on the Hugging Face hub
(this needs the network). Before any weight is read, the directory, its ``config.json``,
its architecture and the memory it needs (parameters x bytes per parameter, against the
memory free on the device) are checked, each failure raising one sentence.

Example:
    >>> from interplab.lm.load import resolve_device, resolve_dtype
    >>> str(resolve_device("cpu")), resolve_dtype("bfloat16")
    ('cpu', torch.bfloat16)
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

import torch

from interplab.errors import InterplabError, check

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
MODEL_HELP = ("A causal language model: a local Hugging Face directory (config.json, weights, tokenizer; "
              "works offline) or a hub name such as EleutherAI/pythia-70m (needs the network).")


class LoadedLM(NamedTuple):
    """What :func:`load` returns: the hooked ``model`` (a ``TransformerBridge``) and its ``tokenizer``."""

    model: Any
    tokenizer: Any


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda[:i]`` or ``mps`` as a torch device.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Unknown device 'tpu'; use auto, cpu, cuda or mps.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = device.split(":")[0]
    check(kind in ("cpu", "cuda", "mps"), f"Unknown device {device!r}; use auto, cpu, cuda or mps.")
    check(kind != "cuda" or torch.cuda.is_available(), "CUDA was asked for but no CUDA device is available.")
    check(kind != "mps" or torch.backends.mps.is_available(), "MPS was asked for but it is not available.")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    """A dtype name (``float32``, ``float64``, ``bfloat16``, ``float16``) or torch dtype.

    Example:
        >>> resolve_dtype("float64")
        torch.float64
        >>> resolve_dtype("int8")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Unknown dtype 'int8'; use float32, float64, bfloat16 or float16.
    """
    if isinstance(dtype, torch.dtype):
        check(dtype in DTYPES.values(), f"Unsupported dtype {dtype}; use float32, float64, bfloat16 or float16.")
        return dtype
    check(dtype in DTYPES, f"Unknown dtype {dtype!r}; use float32, float64, bfloat16 or float16.")
    return DTYPES[dtype]


def _looks_local(name: str) -> bool:
    """A path rather than a hub name: it exists, or is absolute/relative/home-based, or has 2+ slashes."""
    return (Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") >= 2
            or name.endswith(("/", os.sep)))


def read_config(directory: str | Path) -> dict[str, Any]:
    """A local model directory's ``config.json``, checked (one sentence per problem).

    Raises :class:`~interplab.errors.InterplabError` when the directory does not exist, has no
    ``config.json``, the file is not a JSON object, or names no architecture.

    Example:
        >>> read_config("/no/such/model")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The model directory /no/such/model does not exist.
    """
    path = Path(directory).expanduser()
    check(path.exists(), f"The model directory {directory} does not exist.")
    check(path.is_dir(), f"{directory} is a file, not a model directory.")
    config_path = path / "config.json"
    check(config_path.is_file(), f"{directory} has no config.json, so it is not a Hugging Face model directory.")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InterplabError(f"{config_path} is not valid JSON ({getattr(e, 'msg', e)}).") from None
    check(isinstance(config, dict), f"{config_path} is not a JSON object.")
    return config


def architecture(config: dict[str, Any], where: str = "the model") -> str:
    """The Hugging Face architecture class named by ``config``, checked against what TransformerLens bridges.

    Example:
        >>> architecture({"architectures": ["GPT2LMHeadModel"]})
        'GPT2LMHeadModel'
        >>> architecture({"architectures": ["MadeUpForCausalLM"]})
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The model's architecture MadeUpForCausalLM is not one TransformerLens can load as a causal language model.
    """
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    names = config.get("architectures")
    check(isinstance(names, list) and len(names) > 0 and isinstance(names[0], str),
          f"The config.json of {where} names no architecture (its 'architectures' list is missing).")
    arch = names[0]
    causal = arch.endswith(("ForCausalLM", "LMHeadModel", "LMHead"))
    check(arch in SUPPORTED_ARCHITECTURES and causal,
          f"The {'model' if where == 'the model' else where}'s architecture {arch} is not one TransformerLens can "
          "load as a causal language model.")
    return arch


def _safetensors_params(path: Path) -> int:
    """Parameters stored in a safetensors file, read from its header only."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    total = 0
    for key, info in header.items():
        if key != "__metadata__":
            count = 1
            for s in info["shape"]:
                count *= s
            total += count
    return total


def _config_params(config: dict[str, Any]) -> int:
    """A rough parameter count from the usual config fields (when the weights are not at hand)."""
    def get(*keys: str, default: int = 0) -> int:
        for k in keys:
            if isinstance(config.get(k), int):
                return int(config[k])
        return default

    d = get("hidden_size", "n_embd", "d_model")
    layers = get("num_hidden_layers", "n_layer", "num_layers")
    vocab = get("vocab_size")
    ff = get("intermediate_size", "n_inner", "ffn_dim", default=4 * d)
    gated = config.get("hidden_act", config.get("activation_function")) in ("silu", "swiglu", "gelu_pytorch_tanh")
    per_layer = 4 * d * d + (3 if gated else 2) * d * ff
    tied = config.get("tie_word_embeddings", True)
    return layers * per_layer + (1 if tied else 2) * vocab * d


def count_parameters(directory: str | Path, config: dict[str, Any]) -> int:
    """Parameters of a local checkpoint: exact from safetensors headers, else estimated from ``config``.

    Example:
        >>> count_parameters("/nonexistent", {"hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 10,
        ...                                   "intermediate_size": 16})
        592
    """
    path = Path(directory)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return sum(_safetensors_params(f) for f in files) if files else _config_params(config)


def available_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now (None when unknown, e.g. MPS).

    Example:
        >>> available_memory(torch.device("cpu")) > 0
        True
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_fits(n_params: int, dtype: torch.dtype, device: torch.device, available: int | None = None) -> int:
    """Refuse (one sentence) when ``n_params`` weights of ``dtype`` exceed the memory free on ``device``.

    Returns the bytes needed. ``available`` overrides the measured free memory.

    Example:
        >>> check_fits(10**6, torch.float32, torch.device("cpu"), available=10**9)
        4000000
        >>> check_fits(10**9, torch.float32, torch.device("cpu"), available=10**9)
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The model needs about 4.0 GB (1000M parameters in torch.float32) but only 1.0 GB is free on cpu.
    """
    need = n_params * torch.finfo(dtype).bits // 8
    free = available_memory(device) if available is None else available
    check(free is None or need <= free,
          f"The model needs about {need / 1e9:.1f} GB ({n_params / 1e6:.0f}M parameters in {dtype}) but only "
          f"{(free or 0) / 1e9:.1f} GB is free on {device}.")
    return need


def load(name_or_dir: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "float32",
         compatibility: bool = True, available: int | None = None) -> LoadedLM:
    """Load a causal LM (local directory or hub name) as a hooked model with TransformerLens names.

    Returns ``LoadedLM(model, tokenizer)``: ``model`` is a ``TransformerBridge`` in eval mode
    with ``enable_compatibility_mode()`` applied (``compatibility=False`` keeps the raw
    Hugging Face numerics and the bridge's own names); it maps tokens ``[batch, pos]`` to
    logits ``[batch, pos, d_vocab]``. ``tokenizer`` is the checkpoint's Hugging Face
    tokenizer. ``available`` overrides the free memory measured on the device (bytes).

    Raises :class:`~interplab.errors.InterplabError` (one sentence) for a missing directory,
    a directory without ``config.json`` or tokenizer files, a corrupt ``config.json``, an
    architecture TransformerLens cannot load as a causal LM, a model larger than the free
    memory, or a hub name that cannot be fetched.

    Method: TransformerLens 4 ``TransformerBridge`` (Nanda and Bloom, TransformerLens).

    Example:
        >>> load("/no/such/dir")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The model directory /no/such/dir does not exist.
    """
    name = str(name_or_dir)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if _looks_local(name):
        path = Path(name).expanduser().resolve()
        config = read_config(name)
        architecture(config, where=name)
        check(any((path / f).is_file() for f in TOKENIZER_FILES),
              f"{name} has no tokenizer files (tokenizer.json or tokenizer_config.json).")
        check_fits(count_parameters(path, config), dt, dev, available)
        source = str(path)  # absolute: a bare relative name could be taken for a hub alias
    else:
        source = name
    from transformer_lens.model_bridge import TransformerBridge

    try:
        bridge = TransformerBridge.boot_transformers(source, device=dev, dtype=dt)
    except OSError as e:
        if source != name:
            raise InterplabError(f"Could not load the model from the directory {name}: {_first_line(e)}") from None
        raise InterplabError(f"There is no local directory {name} and the Hugging Face hub could not provide a "
                             f"model of that name (is the network reachable?): {_first_line(e)}") from None
    except (ValueError, KeyError, NotImplementedError) as e:
        raise InterplabError(f"TransformerLens could not load the model {name}: {_first_line(e)}") from None
    if compatibility:
        bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    return LoadedLM(bridge, bridge.tokenizer)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0].rstrip(".") if text else type(e).__name__
    return line + "."


# -- command-line helpers ---------------------------------------------------------------------

def model_option(default: str | None = None, help: str = MODEL_HELP) -> Any:
    """A typer ``--model NAME_OR_DIR`` option that any command or study can declare.

    Example:
        >>> import typer
        >>> model_option().param_decls
        ('--model',)
    """
    import typer

    return typer.Option(default, "--model", help=help)


def load_option(model: str | None, device: str = "auto", dtype: str = "float32") -> LoadedLM | None:
    """Load what a ``--model`` option names (None when it was not given), with the CLI's device and dtype.

    Example:
        >>> load_option(None) is None
        True
    """
    return None if model is None else load(model, device=device, dtype=dtype)


__all__ = ["LoadedLM", "load", "read_config", "architecture", "count_parameters", "available_memory",
           "check_fits", "resolve_device", "resolve_dtype", "model_option", "load_option", "MODEL_HELP"]
