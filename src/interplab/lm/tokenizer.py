"""BPE tokenizers trained with Hugging Face ``tokenizers``, and helpers that accept any tokenizer.

:func:`train_tokenizer` trains a byte-level BPE (GPT-2 style: a leading space belongs to the
word, so ``" tennis"`` can be one token; a space is put before the first word too, so a name
is tokenized the same at the start of a document as inside it) on documents, with one special token ``<|bos|>``
(id 0) that starts every document and every row of a token dataset. The helpers
:func:`encode`, :func:`decode`, :func:`bos_id` and :func:`encode_with_offsets` take either a
``tokenizers.Tokenizer`` or a ``transformers`` tokenizer, so the same analysis code runs on
our small LM and on a loaded pretrained model.

Example:
    >>> tok = train_tokenizer(["Ada plays tennis.", "Bo plays chess."] * 20, vocab_size=300)
    >>> decode(tok, encode(tok, "Ada plays chess."))
    ' Ada plays chess.'
    >>> bos_id(tok), vocab_size(tok) <= 300
    (0, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from interplab.errors import InterplabError, check
from interplab.io import PathLike, atomic_write_text

BOS = "<|bos|>"


def train_tokenizer(documents: Iterable[str], vocab_size: int = 1024, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer with the special token ``<|bos|>`` (id 0).

    Raises :class:`InterplabError` if ``vocab_size`` is below the 257 tokens the byte alphabet
    and BOS need. Example: see the module docstring.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    check(vocab_size >= 257, f"vocab_size must be at least 257 (256 bytes and BOS), got {vocab_size}.")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[BOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(documents, trainer=trainer)
    return tok


def save_tokenizer(tok: Any, path: PathLike) -> Path:
    """Write a ``tokenizers.Tokenizer`` as ``tokenizer.json`` (atomically); returns the path.

    Example:
        >>> import tempfile, os
        >>> p = save_tokenizer(train_tokenizer(["a b c"] * 5, 260), os.path.join(tempfile.mkdtemp(), "t.json"))
        >>> encode(load_tokenizer(p), "a b") == encode(train_tokenizer(["a b c"] * 5, 260), "a b")
        True
    """
    path = Path(path)
    atomic_write_text(path, tok.to_str())
    return path


def load_tokenizer(path: PathLike) -> Any:
    """Load a ``tokenizer.json`` (or the one inside a directory), with a sentence if missing or corrupt.

    Example:
        >>> load_tokenizer("/nonexistent")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: No tokenizer at /nonexistent.
    """
    from tokenizers import Tokenizer

    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    check(p.is_file(), f"No tokenizer at {path}.")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise InterplabError(f"{p} is not a valid tokenizer file ({str(e).splitlines()[0][:80]}).") from None


def _is_raw(tok: Any) -> bool:
    return type(tok).__module__.startswith("tokenizers")


def encode(tok: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (``tokenizers`` or ``transformers`` tokenizer).

    Example: see the module docstring.
    """
    if _is_raw(tok):
        return tok.encode(text, add_special_tokens=False).ids
    return list(tok.encode(text, add_special_tokens=False))


def encode_batch(tok: Any, texts: list[str]) -> list[list[int]]:
    """:func:`encode` for many texts at once (parallel inside ``tokenizers``).

    Example:
        >>> tok = train_tokenizer(["ab ab"] * 5, 260)
        >>> encode_batch(tok, ["ab", "ab ab"]) == [encode(tok, "ab"), encode(tok, "ab ab")]
        True
    """
    if _is_raw(tok):
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]


def encode_with_offsets(tok: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and each token's ``(start, end)`` character offsets in ``text``.

    Example:
        >>> tok = train_tokenizer(["Ada plays."] * 5, 260)
        >>> ids, offsets = encode_with_offsets(tok, "Ada plays.")
        >>> offsets[-1]
        (9, 10)
    """
    if _is_raw(tok):
        e = tok.encode(text, add_special_tokens=False)
        return e.ids, [tuple(o) for o in e.offsets]
    out = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(out["input_ids"]), [tuple(o) for o in out["offset_mapping"]]


def decode(tok: Any, ids: Iterable[int]) -> str:
    """The text of token ids (special tokens kept).

    Example: see the module docstring.
    """
    ids = [int(i) for i in ids]
    if _is_raw(tok):
        return tok.decode(ids, skip_special_tokens=False)
    return tok.decode(ids, skip_special_tokens=False)


def token_strings(tok: Any, ids: Iterable[int]) -> list[str]:
    """Each token's own text (for axes and tables), e.g. ``[' plays', ' tennis']``.

    Example:
        >>> tok = train_tokenizer(["Ada plays tennis."] * 5, 270)
        >>> "".join(token_strings(tok, encode(tok, "Ada plays tennis.")))
        ' Ada plays tennis.'
    """
    return [decode(tok, [i]) for i in ids]


def bos_id(tok: Any) -> int:
    """The id of the token that starts a document: ``<|bos|>``, else the tokenizer's BOS or EOS.

    Raises :class:`InterplabError` if the tokenizer has none of them.
    Example: see the module docstring.
    """
    if _is_raw(tok):
        i = tok.token_to_id(BOS)
        check(i is not None, f"The tokenizer has no {BOS} token.")
        return int(i)
    for name in ("bos_token_id", "eos_token_id"):
        i = getattr(tok, name, None)
        if i is not None:
            return int(i)
    raise InterplabError("The tokenizer has neither a BOS nor an EOS token to start documents with.")


def vocab_size(tok: Any) -> int:
    """Number of token ids (including special tokens).

    Example: see the module docstring.
    """
    return int(tok.get_vocab_size()) if _is_raw(tok) else len(tok)


__all__ = ["BOS", "train_tokenizer", "save_tokenizer", "load_tokenizer", "encode", "encode_batch",
           "encode_with_offsets", "decode", "token_strings", "bos_id", "vocab_size"]
