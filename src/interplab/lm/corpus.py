"""A generated corpus with known facts: stories and statements about invented entities.

A small probabilistic grammar writes documents about invented *people* (each with a sport, a
team and a home city), *cities* (each in a country) and *objects* (each with a colour). Names
are made of syllables, and people have a first and a last name, so every name spans several
tokens. Four kinds of documents: lists of facts, short stories about two people, visitor stories in
which a person invented for that document alone is named several times, and chants (a random
line of syllables sung three times). Visitor names and chants cannot be memorised, only copied
from earlier in the context: the behaviour induction heads implement. Because the text is generated, every fact, attribute and token category is known: the
corpus stands in for web text wherever ground truth is needed (fact recall, probes, SAE
features, steering targets).

:func:`make_corpus` writes a corpus directory:

- ``corpus.txt``: one document per line;
- ``annotations.jsonl``: line ``i`` lists document ``i``'s spans ``[start, end, category,
  entity, attribute]``, covering every character but spaces: character offsets, a category
  from :data:`CATEGORIES`, and for a mention of an entity its name (attribute ``null``), for
  an attribute value the entity that has it and the attribute's name (``"Mira Tolvane plays
  the sport of tennis"``: ``tennis`` is ``[.., "sport", "Mira Tolvane", "sport"]``), and
  ``null, null`` for other words and punctuation;
- ``entities.json``: every entity with its attributes, and the settings that made the corpus.

Every fact is stated in a fixed form, so it can be asked as a completion prompt
(:func:`fact_prompts`): ``"Mira Tolvane plays the sport of"`` -> ``" tennis"``. The same seed
and size give byte-identical files.

Example:
    >>> import tempfile
    >>> c = make_corpus(tempfile.mkdtemp(), n_bytes=20_000, n_people=8, seed=0, quiet=True)
    >>> len(c.people), sorted(c.attributes)
    (8, ['colour', 'country', 'home', 'sport', 'team'])
    >>> p = fact_prompts(c)[0]
    >>> p.attribute, p.prompt.endswith("plays the sport of"), p.answer.strip() in SPORTS
    ('sport', True, True)
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from interplab.errors import check
from interplab.io import PathLike, atomic_write_json, read_json

SPORTS = ("tennis", "football", "chess", "rugby", "golf", "hockey", "cricket", "boxing")
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")
TEAMS = ("Iron Wolves", "Silver Hawks", "Golden Bears", "Night Owls", "Storm Foxes", "Stone Lions",
         "River Otters", "Frost Eagles", "Ember Tigers", "Sea Falcons", "Oak Badgers", "Sky Ravens")
CATEGORIES = ("person", "visitor", "chant", "city", "country", "object", "sport", "team", "colour", "word", "punct")
"""Span categories: entity mentions (person, city, country, object), visitors (people invented
for one document only), chants (random syllable words, sung three times in one document),
attribute values (sport, team, colour), other words (word) and punctuation (punct)."""

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "x")


@dataclass(frozen=True)
class FactPrompt:
    """One fact as a completion: ``prompt`` + ``answer`` (the answer starts with a space)."""

    attribute: str
    entity: str
    prompt: str
    answer: str


# Each attribute: the entity kind that has it, and the sentence stating it (prompt part, answer).
FACT_FORMS = {
    "sport": ("person", "{e} plays the sport of", "{v}"),
    "team": ("person", "{e} plays for the", "{v}"),
    "home": ("person", "{e} lives in the city of", "{v}"),
    "country": ("city", "The city of {e} is in the country of", "{v}"),
    "colour": ("object", "The colour of the {e} is", "{v}"),
}
_ATTRIBUTE_CATEGORY = {"sport": "sport", "team": "team", "home": "city", "country": "country", "colour": "colour"}


@dataclass
class Corpus:
    """A corpus directory's entities and facts (see :func:`load_corpus`).

    ``people``: name -> {"sport", "team", "home"}; ``cities``: name -> {"country"};
    ``objects``: name -> {"colour"}; ``countries``: list of names.
    """

    path: Path
    people: dict[str, dict[str, str]]
    cities: dict[str, dict[str, str]]
    objects: dict[str, dict[str, str]]
    countries: list[str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def attributes(self) -> dict[str, dict[str, str]]:
        """attribute -> {entity: value} for every fact in the corpus."""
        kinds = {"person": self.people, "city": self.cities, "object": self.objects}
        return {a: {e: attrs[a] for e, attrs in kinds[kind].items()} for a, (kind, _, _) in FACT_FORMS.items()}

    def documents(self) -> Iterator[str]:
        """The documents of ``corpus.txt``, one by one."""
        with open(self.path / "corpus.txt", encoding="utf-8") as f:
            for line in f:
                yield line.rstrip("\n")

    def annotations(self) -> Iterator[list[list[Any]]]:
        """Each document's spans ``[start, end, category, entity, attribute]``, in the order of :meth:`documents`."""
        with open(self.path / "annotations.jsonl", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["spans"]


class _Namer:
    """Unique invented names from syllables, drawn from one ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set(TEAMS) | set(SPORTS) | set(COLOURS)

    def word(self, lo: int, hi: int) -> str:
        while True:
            n = self.rng.randint(lo, hi)
            w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(n))
            w += self.rng.choice(_CODAS)
            if w not in self.used:
                self.used.add(w)
                return w

    def proper(self, lo: int = 2, hi: int = 3) -> str:
        return self.word(lo, hi).capitalize()

    def fresh(self, lo: int, hi: int) -> str:
        """A name that is not an entity's (it may recur in another document)."""
        while True:
            w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(self.rng.randint(lo, hi)))
            w = (w + self.rng.choice(_CODAS)).capitalize()
            if w.lower() not in self.used and w not in self.used:
                return w


class _Doc:
    """A document under construction: text plus annotated spans."""

    def __init__(self) -> None:
        self.text, self.spans = "", []

    def add(self, piece: str, category: str, entity: str | None = None, attribute: str | None = None) -> None:
        if self.text and piece not in ".,!?:" and not self.text.endswith(" "):
            self.text += " "
        start = len(self.text)
        self.text += piece
        if category in ("word", "punct"):  # function words: one span per word
            pos = start
            for w in piece.split(" "):
                self.spans.append([pos, pos + len(w), category, None, None])
                pos += len(w) + 1
        else:
            self.spans.append([start, len(self.text), category, entity, attribute])

    def words(self, s: str) -> None:
        self.add(s, "word")

    def punct(self, s: str) -> None:
        self.add(s, "punct")


def _fact(doc: _Doc, attribute: str, entity: str, value: str) -> None:
    kind, form, _ = FACT_FORMS[attribute]
    before, after = form.split("{e}")
    if before.strip():
        doc.words(before.strip())
    doc.add(entity, kind, entity)
    doc.words(after.strip())
    doc.add(value, _ATTRIBUTE_CATEGORY[attribute], entity, attribute)
    doc.punct(".")


def _statements(doc: _Doc, rng: random.Random, c: Corpus) -> None:
    for _ in range(rng.randint(3, 6)):
        attribute = rng.choice(tuple(FACT_FORMS))
        kind = FACT_FORMS[attribute][0]
        table = {"person": c.people, "city": c.cities, "object": c.objects}[kind]
        entity = rng.choice(sorted(table))
        _fact(doc, attribute, entity, table[entity][attribute])


def _story(doc: _Doc, rng: random.Random, c: Corpus) -> None:
    names = sorted(c.people)
    a, b = rng.sample(names, 2)
    pa, pb = c.people[a], c.people[b]
    obj = rng.choice(sorted(c.objects))
    doc.words("One day")
    doc.punct(",")
    doc.add(a, "person", a)
    doc.words("went to")
    doc.add(pa["home"], "city", a, "home")
    doc.words("to play")
    doc.add(pa["sport"], "sport", a, "sport")
    doc.words("with")
    doc.add(b, "person", b)
    doc.punct(".")
    doc.add(b, "person", b)
    doc.words("brought the")
    doc.add(c.objects[obj]["colour"], "colour", obj, "colour")
    doc.add(obj, "object", obj)
    doc.punct(".")
    if rng.random() < 0.5:
        _fact(doc, "team", a, pa["team"])
    else:
        doc.add(a, "person", a)
        doc.words("and")
        doc.add(b, "person", b)
        doc.words("talked about the")
        doc.add(pb["team"], "team", b, "team")
        doc.punct(".")
    doc.add(a, "person", a)
    doc.words("was happy in")
    doc.add(c.cities[pa["home"]]["country"], "country", pa["home"], "country")
    doc.punct(".")
    _fact(doc, "sport", b, pb["sport"])


def _visitor(doc: _Doc, rng: random.Random, c: Corpus, namer: "_Namer") -> None:
    v = f"{namer.fresh(1, 2)} {namer.fresh(2, 3)}"
    a = rng.choice(sorted(c.people))
    obj = rng.choice(sorted(c.objects))
    city = rng.choice(sorted(c.cities))
    doc.words("A visitor called")
    doc.add(v, "visitor", v)
    doc.words("came to")
    doc.add(city, "city", city)
    doc.punct(".")
    doc.add(v, "visitor", v)
    doc.words("met")
    doc.add(a, "person", a)
    doc.punct(",")
    doc.words("and")
    doc.add(a, "person", a)
    doc.words("showed")
    doc.add(v, "visitor", v)
    doc.words("the")
    doc.add(c.objects[obj]["colour"], "colour", obj, "colour")
    doc.add(obj, "object", obj)
    doc.punct(".")
    for _ in range(rng.randint(2, 5)):
        doc.words(rng.choice(("Later", "Then", "At night", "Next")))
        doc.punct(",")
        doc.add(v, "visitor", v)
        doc.words(rng.choice(("smiled", "left", "sang", "slept", "waved")))
        doc.punct(".")


def _chant(doc: _Doc, rng: random.Random, c: Corpus, namer: "_Namer") -> None:
    a = rng.choice(sorted(c.people))
    line = " ".join(namer.fresh(1, 2).lower() for _ in range(rng.randint(4, 7)))
    doc.add(a, "person", a)
    doc.words("taught a chant")
    doc.punct(":")
    doc.add(line, "chant")
    doc.punct(".")
    for who in ("Everyone sang", "They sang again"):
        doc.words(who)
        doc.punct(":")
        doc.add(line, "chant")
        doc.punct(".")


def _entities(rng: random.Random, n_people: int, n_cities: int, n_countries: int, n_objects: int
              ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], dict[str, dict[str, str]], list[str], _Namer]:
    namer = _Namer(rng)
    countries = [namer.proper(2, 3) + "ia" for _ in range(n_countries)]
    cities = {namer.proper(2, 3): {"country": countries[i % n_countries]} for i in range(n_cities)}
    city_names = list(cities)
    people = {}
    for _ in range(n_people):
        people[f"{namer.proper(1, 2)} {namer.proper(2, 3)}"] = {
            "sport": rng.choice(SPORTS), "team": rng.choice(TEAMS), "home": rng.choice(city_names)}
    objects = {namer.word(2, 3): {"colour": rng.choice(COLOURS)} for _ in range(n_objects)}
    return people, cities, objects, countries, namer


def make_corpus(out_dir: PathLike, n_bytes: int = 2_000_000, n_people: int = 100, n_cities: int = 20,
                n_countries: int = 6, n_objects: int = 30, story_frac: float = 0.3, visitor_frac: float = 0.25,
                chant_frac: float = 0.15, seed: int = 0,
                quiet: bool = False) -> Corpus:
    """Generate a corpus of about ``n_bytes`` of text into ``out_dir``; see the module docstring.

    ``story_frac``, ``visitor_frac``, ``chant_frac``: fractions of documents that are short
    stories, visitor stories and chants (the rest list facts).
    Returns the :class:`Corpus`. Raises :class:`InterplabError` on settings that cannot work.

    Example: see the module docstring.
    """
    check(n_bytes >= 1000, f"n_bytes must be at least 1000, got {n_bytes}.")
    check(n_people >= 2 and n_cities >= 1 and n_countries >= 1 and n_objects >= 1,
          "A corpus needs at least 2 people, 1 city, 1 country and 1 object.")
    check(n_countries <= n_cities, f"n_countries ({n_countries}) cannot exceed n_cities ({n_cities}).")
    check(min(story_frac, visitor_frac, chant_frac) >= 0 and story_frac + visitor_frac + chant_frac <= 1.0,
          "story_frac, visitor_frac and chant_frac must be non-negative with a sum of at most 1.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    people, cities, objects, countries, namer = _entities(rng, n_people, n_cities, n_countries, n_objects)
    settings = {"n_bytes": n_bytes, "n_people": n_people, "n_cities": n_cities, "n_countries": n_countries,
                "n_objects": n_objects, "story_frac": story_frac, "visitor_frac": visitor_frac,
                "chant_frac": chant_frac, "seed": seed}
    corpus = Corpus(out, people, cities, objects, countries, settings)
    # every fact is stated once first, so that even a small corpus contains all of them
    firsts = [(a, e) for a, table in corpus.attributes.items() for e in table]
    written, n_docs = 0, 0
    bar = tqdm(total=n_bytes, disable=quiet, desc="corpus", unit="B", unit_scale=True)
    tmp_text, tmp_ann = out / "corpus.txt.tmp", out / "annotations.jsonl.tmp"
    with open(tmp_text, "w", encoding="utf-8") as ft, open(tmp_ann, "w", encoding="utf-8") as fa:
        while written < n_bytes:
            doc = _Doc()
            if firsts:
                for a, e in firsts[:4]:
                    _fact(doc, a, e, corpus.attributes[a][e])
                firsts = firsts[4:]
            elif (u := rng.random()) < story_frac:
                _story(doc, rng, corpus)
            elif u < story_frac + visitor_frac:
                _visitor(doc, rng, corpus, namer)
            elif u < story_frac + visitor_frac + chant_frac:
                _chant(doc, rng, corpus, namer)
            else:
                _statements(doc, rng, corpus)
            ft.write(doc.text + "\n")
            fa.write(json.dumps({"doc": n_docs, "spans": doc.spans}) + "\n")
            written += len(doc.text) + 1
            n_docs += 1
            bar.update(len(doc.text) + 1)
    bar.close()
    tmp_text.replace(out / "corpus.txt")
    tmp_ann.replace(out / "annotations.jsonl")
    settings["n_documents"] = n_docs
    atomic_write_json(out / "entities.json", {"settings": settings, "people": people, "cities": cities,
                                              "objects": objects, "countries": countries})
    return corpus


def load_corpus(path: PathLike) -> Corpus:
    """Open a corpus directory written by :func:`make_corpus`.

    Example:
        >>> load_corpus("/nonexistent")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: /nonexistent is not a generated corpus (no entities.json).
    """
    p = Path(path)
    check((p / "entities.json").is_file(), f"{p} is not a generated corpus (no entities.json).")
    d = read_json(p / "entities.json")
    check({"people", "cities", "objects", "countries"} <= set(d), f"{p / 'entities.json'} is incomplete.")
    return Corpus(p, d["people"], d["cities"], d["objects"], d["countries"], d.get("settings", {}))


def fact_prompts(corpus: Corpus, attributes: tuple[str, ...] | None = None) -> list[FactPrompt]:
    """Every fact of ``corpus`` as a completion prompt, in a fixed order (attribute, entity).

    Example:
        >>> import tempfile
        >>> c = make_corpus(tempfile.mkdtemp(), n_bytes=5000, n_people=3, n_cities=2, n_countries=1,
        ...                 n_objects=2, quiet=True)
        >>> [p.attribute for p in fact_prompts(c)]
        ['sport', 'sport', 'sport', 'team', 'team', 'team', 'home', 'home', 'home', 'country', 'country', 'colour', 'colour']
    """
    out = []
    for attribute, table in corpus.attributes.items():
        if attributes is not None and attribute not in attributes:
            continue
        form = FACT_FORMS[attribute][1]
        for entity in sorted(table):
            out.append(FactPrompt(attribute, entity, form.format(e=entity), " " + table[entity]))
    return out


def span_categories(text: str, spans: list[list[Any]], offsets: list[tuple[int, int]]) -> list[str]:
    """The category of each token, from its character ``offsets`` in ``text`` and the document's spans.

    A token takes the category of the span holding its first non-space character; a token of
    spaces only takes the category of the next span.

    Example:
        >>> spans = [[0, 3, "person", "Ada", None], [4, 9, "word", None, None], [9, 10, "punct", None, None]]
        >>> span_categories("Ada plays.", spans, [(0, 3), (3, 9), (9, 10)])
        ['person', 'word', 'punct']
    """
    return [span[2] if span else "word" for span in _token_spans(text, spans, offsets)]


def _token_spans(text: str, spans: list[list[Any]], offsets: list[tuple[int, int]]) -> list[list[Any] | None]:
    """The span holding each token's first non-space character (None outside every span)."""
    owner: list[list[Any] | None] = [None] * (len(text) + 1)
    for span in spans:
        for j in range(span[0], span[1]):
            owner[j] = span
    out = []
    for s, e in offsets:
        j = s
        while j < e and j < len(text) and text[j] == " ":
            j += 1
        out.append(owner[min(j, len(text))])
    return out


@dataclass
class AnnotatedDoc:
    """A document's tokens with, for each token, its category, entity and attribute (see the module docstring)."""

    text: str
    ids: list[int]
    categories: list[str]
    entities: list[str | None]
    attributes: list[str | None]


def annotated_documents(corpus: Corpus, tokenizer: Any, limit: int | None = None) -> Iterator[AnnotatedDoc]:
    """Each document tokenized (no BOS), with every token's category, entity and attribute.

    Example:
        >>> import tempfile
        >>> from interplab.lm.tokenizer import train_tokenizer
        >>> c = make_corpus(tempfile.mkdtemp(), n_bytes=3000, n_people=3, quiet=True)
        >>> d = next(annotated_documents(c, train_tokenizer(c.documents(), 300)))
        >>> d.categories[:3], d.entities[0] in c.people
        (['person', 'person', 'person'], True)
    """
    from interplab.lm.tokenizer import encode_with_offsets

    for i, (text, spans) in enumerate(zip(corpus.documents(), corpus.annotations())):
        if limit is not None and i >= limit:
            return
        ids, offsets = encode_with_offsets(tokenizer, text)
        owners = _token_spans(text, spans, offsets)
        cats = [span[2] if span else "word" for span in owners]
        ents = [span[3] if span else None for span in owners]
        attrs = [span[4] if span else None for span in owners]
        yield AnnotatedDoc(text, ids, cats, ents, attrs)


__all__ = ["SPORTS", "COLOURS", "TEAMS", "CATEGORIES", "FACT_FORMS", "FactPrompt", "Corpus", "make_corpus",
           "load_corpus", "fact_prompts", "span_categories", "AnnotatedDoc", "annotated_documents"]