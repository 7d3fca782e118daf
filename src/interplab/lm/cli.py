"""``interplab corpus``: make the generated corpus with known facts, or tokenize a text corpus.

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(app, ["--help"]).exit_code
    0
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interplab.options import number

app = typer.Typer(help="Corpora for language models: the generated corpus with known facts, token files.",
                  no_args_is_help=True)


@app.command("make")
def make(
    out: Path = typer.Option(..., "--out", help="Directory to write (corpus.txt, annotations.jsonl, entities.json, "
                             "tokenizer.json, tokens.bin)."),
    size: str = typer.Option("2MB", help="Approximate text size, e.g. 300KB, 2MB, 40MB."),
    people: int = number(100, "--people", kind=int, ge=1, le=1_000_000, help="Number of invented people (sport, team, home city)."),
    cities: int = number(20, "--cities", kind=int, ge=1, le=1_000_000, help="Number of cities (each in a country)."),
    countries: int = number(6, "--countries", kind=int, ge=1, le=1_000_000, help="Number of countries."),
    objects: int = number(30, "--objects", kind=int, ge=1, le=1_000_000, help="Number of objects (each with a colour)."),
    story_frac: float = number(0.3, "--story-frac", kind=float, ge=0, le=1, help="Fraction of documents that are stories about two people."),
    visitor_frac: float = number(0.25, "--visitor-frac", kind=float, ge=0, le=1, help="Fraction of documents that are visitor stories (a name made up "
                                       "for the document, repeated)."),
    chant_frac: float = number(0.15, "--chant-frac", kind=float, ge=0, le=1, help="Fraction of documents that are chants (a random line sung three "
                                     "times; the rest of the documents list facts)."),
    vocab_size: int = number(768, "--vocab-size", kind=int, ge=0, le=10_000_000, help="BPE vocabulary size (0: do not train a tokenizer)."),
    seed: int = number(0, "--seed", kind=int, ge=0, help="Seed of the grammar: the same seed and size give identical files."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Write a deterministic corpus of stories and statements about invented entities, its annotation and a BPE tokenizer."""
    from interplab.lm.corpus import make_corpus
    from interplab.lm.tokens import tokenize_corpus

    c = make_corpus(out, n_bytes=parse_size(size), n_people=people, n_cities=cities, n_countries=countries,
                    n_objects=objects, story_frac=story_frac, visitor_frac=visitor_frac, chant_frac=chant_frac, seed=seed, quiet=quiet)
    typer.echo(f"corpus: {c.settings['n_documents']} documents, {len(c.people)} people, {len(c.cities)} cities, "
               f"{len(c.objects)} objects")
    if vocab_size:
        from interplab.lm.tokens import TokenDataset

        path = tokenize_corpus(out, vocab_size=vocab_size, quiet=quiet)
        typer.echo(f"tokens: {TokenDataset(path, 2).meta['n_tokens']} (vocabulary {vocab_size})")
    typer.echo(f"corpus directory: {out}")


@app.command("tokenize")
def tokenize(
    source: str = typer.Argument(..., help="A text file (one document per line), a .jsonl file, or hf:NAME[:SPLIT]."),
    out: Path = typer.Option(..., "--out", help="Directory to write tokenizer.json and tokens.bin into."),
    vocab_size: int = number(768, "--vocab-size", kind=int, ge=2, le=10_000_000, help="BPE vocabulary size."),
    field: str = typer.Option("text", help="The text field of JSONL lines or dataset rows."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train a BPE tokenizer on a text corpus and write its memory-mapped token file."""
    from interplab.lm.tokens import TokenDataset, tokenize_corpus

    path = tokenize_corpus(out, vocab_size=vocab_size, source=source, field=field, quiet=quiet)
    typer.echo(f"tokens: {TokenDataset(path, 2).meta['n_tokens']} in {path}")


def parse_size(text: str) -> int:
    """Bytes from ``"300KB"``, ``"2MB"``, ``"1.5GB"`` or a plain number.

    Example:
        >>> parse_size("300KB"), parse_size("2MB"), parse_size("1000")
        (300000, 2000000, 1000)
    """
    from interplab.errors import InterplabError

    t = text.strip().upper()
    for suffix, mult in (("KB", 10**3), ("MB", 10**6), ("GB", 10**9), ("B", 1)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], mult
            break
    else:
        scale = 1
    try:
        return int(float(t) * scale)
    except ValueError:
        raise InterplabError(f"Cannot read the size {text!r}; write e.g. 300KB or 2MB.") from None


def sample_command(
    run_dir: Path = typer.Argument(..., help="A run directory from `interplab train lm`."),
    prompt: str = typer.Option("", help="Text to continue (after BOS)."),
    max_new_tokens: int = number(40, "--max-new-tokens", kind=int, ge=1, le=1_000_000, help="Tokens to generate."),
    temperature: float = number(1.0, "--temperature", kind=float, ge=0, le=1e6, help="Sampling temperature (0: greedy)."),
    top_k: Optional[int] = number(None, "--top-k", kind=int, ge=1, le=10_000_000, help="Sample from the k most likely tokens only."),
    n: int = number(1, "--n", kind=int, ge=1, le=100_000, help="Number of samples."),
    seed: int = number(0, "--seed", kind=int, ge=0, help="Seed of the sampling generator."),
) -> None:
    """Sample text from a language model trained with `interplab train lm`."""
    from interplab.lm.generate import complete
    from interplab.lm.tokenizer import load_tokenizer
    from interplab.runs import load, read_json

    model = load(run_dir)
    tok = load_tokenizer(read_json(run_dir / "config.json")["task"].get("corpus", run_dir))
    for i in range(n):
        typer.echo(prompt + complete(model, tok, prompt, max_new_tokens, temperature, top_k, seed + i))


__all__ = ["app", "parse_size", "sample_command"]
