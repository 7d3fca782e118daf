"""Language models: the generated corpus, tokenizers, token datasets and sampling.

Modules: :mod:`interplab.lm.corpus` (a corpus with known facts), :mod:`interplab.lm.tokenizer`
(BPE trained with ``tokenizers``), :mod:`interplab.lm.tokens` (token datasets, memory-mapped
token files), :mod:`interplab.lm.generate` (sampling with temperature and a seed).
"""
