"""Real language models: loading through TransformerLens 4's bridge, tokenizers, text data.

``interplab.lm.load(name_or_dir, device=..., dtype=...)`` returns ``(model, tokenizer)``: a
``TransformerBridge`` in compatibility mode, with TransformerLens site names, which every
interplab analysis accepts (see :mod:`interplab.lm.load`).

Example:
    >>> from interplab import lm
    >>> lm.load("/no/such/dir")
    Traceback (most recent call last):
    ...
    interplab.errors.InterplabError: The model directory /no/such/dir does not exist.
"""

from interplab.lm.load import LoadedLM, load, load_option, model_option

__all__ = ["LoadedLM", "load", "load_option", "model_option"]
