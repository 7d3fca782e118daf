"""Token datasets: documents -> one token stream on disk -> fixed-length rows with BOS.

Documents come from text files (one document per line, or per blank-line-separated block),
JSONL files (a text field per line) or Hugging Face ``datasets`` (when the library and the
data are available). :func:`write_token_file` tokenizes them in batches and appends the ids to
a flat binary file (``uint16`` when the vocabulary fits, else ``uint32``) beside a small JSON
header, so corpora larger than memory never have to be held at once. Every document starts
with the BOS token.

:class:`TokenDataset` memory-maps such a file and cuts the stream into rows of ``n_ctx``
tokens: row ``i`` is ``[BOS] + stream[i*(n_ctx-1) : (i+1)*(n_ctx-1)]`` (TransformerLens
``tokenize_and_concatenate`` habit; the last incomplete row is dropped). Rows are read lazily
and shuffled by a ``torch.Generator``.

Example:
    >>> import tempfile, os
    >>> from interplab.lm.tokenizer import train_tokenizer
    >>> docs = ["Ada plays tennis.", "Bo plays chess."] * 10
    >>> tok = train_tokenizer(docs, vocab_size=300)
    >>> path = write_token_file(docs, tok, os.path.join(tempfile.mkdtemp(), "tokens.bin"), quiet=True)
    >>> ds = TokenDataset(path, n_ctx=8)
    >>> ds.rows(torch.tensor([0, 1])).shape, bool((ds.rows(torch.arange(len(ds)))[:, 0] == 0).all())
    (torch.Size([2, 8]), True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from interplab.errors import InterplabError, check
from interplab.lm.tokenizer import bos_id, encode_batch, vocab_size
from interplab.io import PathLike, atomic_write_json, read_json


def text_documents(path: PathLike, split: str = "line") -> Iterator[str]:
    """Documents of a text file: each non-empty line (``split="line"``) or each block of lines
    separated by a blank line (``split="blank"``), stripped.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> _ = open(p, "w").write("one\\ntwo\\n\\nthree\\n")
        >>> list(text_documents(p)), list(text_documents(p, "blank"))
        (['one', 'two', 'three'], ['one\\ntwo', 'three'])
    """
    check(split in ("line", "blank"), f"split must be 'line' or 'blank', got {split!r}.")
    p = Path(path)
    check(p.is_file(), f"Text file {p} does not exist.")
    with open(p, encoding="utf-8", errors="replace") as f:
        block: list[str] = []
        for line in f:
            line = line.rstrip("\n")
            if split == "line":
                if line.strip():
                    yield line.strip()
            elif line.strip():
                block.append(line)
            elif block:
                yield "\n".join(block).strip()
                block = []
        if block:
            yield "\n".join(block).strip()


def jsonl_documents(path: PathLike, field: str = "text") -> Iterator[str]:
    """The ``field`` of every line of a JSONL file; a sentence for a line that is not JSON or lacks it.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.jsonl")
        >>> _ = open(p, "w").write('{"text": "one"}\\n{"text": "two", "id": 2}\\n')
        >>> list(jsonl_documents(p))
        ['one', 'two']
    """
    p = Path(path)
    check(p.is_file(), f"JSONL file {p} does not exist.")
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise InterplabError(f"Line {n} of {p} is not valid JSON.") from None
            check(isinstance(row, dict) and isinstance(row.get(field), str),
                  f"Line {n} of {p} has no text field {field!r}.")
            yield row[field]


def hf_documents(name: str, split: str = "train", field: str = "text", config: str | None = None) -> Iterator[str]:
    """The ``field`` of each example of a Hugging Face dataset (local or cached; hub when reachable).

    Raises :class:`InterplabError` if ``datasets`` is missing or the dataset cannot be loaded.

    Example:
        >>> next(hf_documents("/nonexistent/dataset"))
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: Could not load the dataset '/nonexistent/dataset' (is it local, cached, or is the hub reachable?).
    """
    try:
        import datasets
    except ImportError:
        raise InterplabError("Hugging Face datasets are not installed; pip install datasets.") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception:
        raise InterplabError(f"Could not load the dataset {name!r} (is it local, cached, or is the hub reachable?).") from None
    for row in ds:
        check(field in row, f"The dataset {name!r} has no field {field!r}.")
        yield row[field]


def documents(source: PathLike, field: str = "text", split: str = "line") -> Iterator[str]:
    """Documents from a ``.jsonl`` file, any other text file, or ``hf:NAME[:SPLIT]`` (Hugging Face).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> _ = open(p, "w").write("x\\ny\\n")
        >>> list(documents(p))
        ['x', 'y']
    """
    s = str(source)
    if s.startswith("hf:"):
        parts = s[3:].split(":")
        return hf_documents(parts[0], parts[1] if len(parts) > 1 else "train", field)
    if s.endswith(".jsonl"):
        return jsonl_documents(s, field)
    return text_documents(s, split)


def write_token_file(docs: Iterable[str], tokenizer: Any, path: PathLike, batch_docs: int = 2048,
                     quiet: bool = False) -> Path:
    """Tokenize ``docs`` (each prefixed with BOS) into the flat token file ``path`` plus ``path.json``.

    Works in batches of ``batch_docs`` documents, so memory stays bounded. The header records
    dtype, token and document counts, vocabulary size and BOS id. Returns ``path``.
    Example: see the module docstring.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bos, V = bos_id(tokenizer), vocab_size(tokenizer)
    dtype = np.uint16 if V <= 2**16 else np.uint32
    n_tokens, n_docs = 0, 0
    tmp = path.with_name(path.name + ".tmp")
    bar = tqdm(disable=quiet, desc="tokenize", unit="doc")

    def flush(batch: list[str], f: Any) -> int:
        ids = encode_batch(tokenizer, batch)
        flat = np.fromiter((t for row in ids for t in (bos, *row)), dtype=dtype,
                           count=sum(len(r) + 1 for r in ids))
        flat.tofile(f)
        bar.update(len(batch))
        return len(flat)

    with open(tmp, "wb") as f:
        batch: list[str] = []
        for d in docs:
            batch.append(d)
            n_docs += 1
            if len(batch) == batch_docs:
                n_tokens += flush(batch, f)
                batch = []
        if batch:
            n_tokens += flush(batch, f)
    bar.close()
    check(n_tokens > 0, "There were no documents to tokenize.")
    tmp.replace(path)
    atomic_write_json(path.with_name(path.name + ".json"), {
        "dtype": np.dtype(dtype).name, "n_tokens": n_tokens, "n_documents": n_docs, "vocab_size": V, "bos": bos})
    return path


class TokenDataset:
    """Rows of ``n_ctx`` tokens from a memory-mapped token file; see the module docstring.

    ``len(ds)`` is the number of rows. Raises :class:`InterplabError` for a missing or
    inconsistent file, or a stream shorter than one row.
    """

    def __init__(self, path: PathLike, n_ctx: int) -> None:
        path = Path(path)
        header = path.with_name(path.name + ".json")
        check(path.is_file() and header.is_file(), f"No token file at {path} (with its {header.name} header).")
        meta = read_json(header)
        check(n_ctx >= 2, f"n_ctx must be at least 2, got {n_ctx}.")
        self.path, self.n_ctx, self.meta = path, n_ctx, meta
        self.bos = int(meta["bos"])
        itemsize = np.dtype(meta["dtype"]).itemsize
        check(path.stat().st_size == itemsize * int(meta["n_tokens"]),
              f"{path} does not match its header (truncated or overwritten?); write it again.")
        self.stream = np.memmap(path, dtype=meta["dtype"], mode="r")
        self.n_rows = len(self.stream) // (n_ctx - 1)
        check(self.n_rows >= 1, f"{path} holds {len(self.stream)} tokens, fewer than one row of {n_ctx}.")

    def __len__(self) -> int:
        return self.n_rows

    @property
    def vocab_size(self) -> int:
        """The vocabulary size recorded in the header."""
        return int(self.meta["vocab_size"])

    def rows(self, index: Tensor) -> Tensor:
        """Rows ``index`` as a long tensor ``[len(index), n_ctx]``, each starting with BOS.

        Example: see the module docstring.
        """
        idx = index.cpu().numpy().astype(np.int64)
        check(len(idx) == 0 or (idx.min() >= 0 and idx.max() < self.n_rows),
              f"row index out of range 0..{self.n_rows - 1}.")
        k = self.n_ctx - 1
        body = self.stream[(idx[:, None] * k + np.arange(k)[None, :])].astype(np.int64)
        out = np.concatenate([np.full((len(idx), 1), self.bos, dtype=np.int64), body], axis=1)
        return torch.from_numpy(out)

    def batches(self, batch_size: int, generator: torch.Generator, rows: Tensor | None = None) -> Iterator[Tensor]:
        """One shuffled pass over ``rows`` (default all) in batches of ``batch_size`` rows.

        Example:
            >>> import tempfile, os
            >>> from interplab.lm.tokenizer import train_tokenizer
            >>> tok = train_tokenizer(["a b c d"] * 10, 260)
            >>> ds = TokenDataset(write_token_file(["a b c d"] * 40, tok, os.path.join(tempfile.mkdtemp(), "t.bin"),
            ...                                    quiet=True), n_ctx=5)
            >>> sizes = [b.shape[0] for b in ds.batches(16, torch.Generator().manual_seed(0))]
            >>> len(ds), sizes
            (60, [16, 16, 16, 12])
        """
        rows = torch.arange(self.n_rows) if rows is None else rows
        perm = rows[torch.randperm(len(rows), generator=generator)]
        for i in range(0, len(perm), batch_size):
            yield self.rows(perm[i:i + batch_size])





def tokenize_corpus(corpus_dir: PathLike, vocab_size: int = 768, source: PathLike | None = None,
                    field: str = "text", quiet: bool = False) -> Path:
    """Train a BPE tokenizer and write ``tokenizer.json`` and ``tokens.bin`` into ``corpus_dir``.

    The documents are ``corpus_dir/corpus.txt`` (a generated corpus) unless ``source`` names
    a text/JSONL file or ``hf:NAME``. Returns the token file's path.

    Example:
        >>> import tempfile, os
        >>> from interplab.lm.corpus import make_corpus
        >>> d = tempfile.mkdtemp()
        >>> _ = make_corpus(d, n_bytes=5000, n_people=4, quiet=True)
        >>> TokenDataset(tokenize_corpus(d, vocab_size=300, quiet=True), n_ctx=16).vocab_size
        300
    """
    from interplab.lm.tokenizer import save_tokenizer, train_tokenizer

    out = Path(corpus_dir)
    src = source if source is not None else out / "corpus.txt"
    check(source is not None or Path(src).is_file(), f"{out} has no corpus.txt; make a corpus there first.")
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(documents(src, field), vocab_size)
    save_tokenizer(tok, out / "tokenizer.json")
    return write_token_file(documents(src, field), tok, out / "tokens.bin", quiet=quiet)


__all__ = ["text_documents", "jsonl_documents", "hf_documents", "documents", "write_token_file", "TokenDataset",
           "tokenize_corpus"]
