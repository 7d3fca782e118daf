"""Language models: loading real LMs, the generated corpus, tokenizers, token data, sampling.

``interplab.lm.load(name_or_dir, device=..., dtype=...)`` returns ``(model, tokenizer)``: a
``TransformerBridge`` in compatibility mode, with TransformerLens site names, which every
interplab analysis accepts (see :mod:`interplab.lm.load`).

The other modules: :mod:`interplab.lm.corpus` (a generated corpus with known facts and its
annotation), :mod:`interplab.lm.tokenizer` (BPE trained with ``tokenizers``; helpers that take
any tokenizer), :mod:`interplab.lm.tokens` (token datasets, memory-mapped token files),
:mod:`interplab.lm.facts` (fact prompts and recall), :mod:`interplab.lm.generate` (sampling
with temperature and a seed).

Example:
    >>> from interplab import lm
    >>> lm.load("/no/such/dir")
    Traceback (most recent call last):
    ...
    interplab.errors.InterplabError: The model directory /no/such/dir does not exist.
"""

from interplab.lm.load import LoadedLM, load, load_option, model_option

__all__ = ["LoadedLM", "load", "load_option", "model_option"]
