"""Command-line options generated from dataclasses, validated where they are parsed.

One home for each setting: a default lives in a dataclass field (or a builder's signature), and
the CLI option is generated from it. :func:`setting` declares a field with its help and bounds;
:func:`options_from` turns a dataclass into typer parameters; :func:`command` assembles a typer
command function from those parameters and a body; :func:`number` is a single numeric option for
the few hand-written ones. Every numeric option parses through :class:`Number`, which rejects a
wrong type, a non-finite value, a value outside its bounds and anything beyond ``CAP`` in
magnitude with one sentence (the CLI prints it after ``error:`` and exits 2).

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class S:
    ...     steps: int = setting(100, "Optimizer steps.", ge=1)
    >>> Number(int, "--steps", ge=1)("0")
    Traceback (most recent call last):
    ...
    interplab.errors.InterplabError: --steps must be at least 1, got 0.
    >>> [p.name for p in options_from(S)]
    ['steps']
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

import typer

from interplab.errors import InterplabError

CAP = 10**9
"""Largest magnitude any numeric option accepts unless its field sets a tighter ``le``/``ge``."""


def setting(default: Any, help: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, flag: str | None = None) -> Any:
    """A dataclass field carrying its CLI help, bounds and (optionally) its flag name.

    Example:
        >>> import dataclasses
        >>> f = dataclasses.field
        >>> @dataclasses.dataclass(frozen=True)
        ... class S:
        ...     frac: float = setting(0.5, "Fraction used for training.", gt=0, le=1)
        >>> dataclasses.fields(S)[0].metadata["bounds"]
        {'gt': 0, 'le': 1}
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta = {"help": help, "bounds": bounds, "flag": flag}
    if isinstance(default, (list, dict, set)):
        raise TypeError("setting() defaults must be immutable (use a tuple).")
    return dataclasses.field(default=default, metadata=meta)


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


class Number:
    """Parser of an int or float option with bounds; ``probe`` re-checks with a dataclass's own validation.

    Raises :class:`InterplabError` naming the option (``flag``) in one sentence for a wrong type,
    a non-finite float, a value outside the bounds, or a magnitude beyond ``CAP``.
    ``probe=(cls, field)``: the value is also tried as ``cls(field=value)`` and an error that
    starts with ``"<field> must"`` rejects it (checks across fields wait for the command itself).

    Example:
        >>> Number(float, "--frac", gt=0, le=1)("1.5")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: --frac must be at most 1, got 1.5.
        >>> Number(int, "--n")("12")
        12
    """

    def __init__(self, kind: type, flag: str = "value", ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None, probe: tuple[type, str] | None = None) -> None:
        self.kind, self.flag, self.probe = kind, flag, probe
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt

    def fail(self, what: str) -> None:
        raise InterplabError(f"{self.flag} {what}")

    def __call__(self, value: Any) -> Any:
        if value is None or (isinstance(value, self.kind) and not isinstance(value, bool)):
            v = value
        else:
            try:
                v = self.kind(str(value).strip())
            except ValueError:
                self.fail(f"must be {'an integer' if self.kind is int else 'a number'}, got {value!r}.")
        if v is None:
            return v
        if self.kind is float and not math.isfinite(v):
            self.fail(f"must be a finite number, got {value}.")
        for ok, words, bound in ((self.ge is None or v >= self.ge, "at least", self.ge),
                                 (self.gt is None or v > self.gt, "greater than", self.gt),
                                 (self.le is None or v <= self.le, "at most", self.le),
                                 (self.lt is None or v < self.lt, "less than", self.lt)):
            if not ok:
                self.fail(f"must be {words} {_fmt(bound)}, got {_fmt(v)}.")
        if abs(v) > CAP:
            self.fail(f"must be at most {CAP:.0e} in size, got {_fmt(v)}.")
        if self.probe is not None:
            cls, name = self.probe
            try:
                cls(**{name: v})
            except InterplabError as e:
                if str(e).startswith(f"{name} must"):
                    self.fail(str(e)[len(name) + 1:])
        return v

    def bounds(self) -> dict[str, float]:
        """The declared bounds (for tests that sweep invalid values)."""
        return {k: getattr(self, k) for k in ("ge", "gt", "le", "lt") if getattr(self, k) is not None}


def number(default: Any, flag: str, help: str, kind: type = int, **bounds: Any) -> Any:
    """A hand-written numeric ``typer.Option`` parsed by :class:`Number` (annotate it ``int``/``float``).

    Example:
        >>> number(10, "--top-n", "Features to show.", ge=1).default
        10
    """
    return typer.Option(default, flag, help=help, parser=Number(kind, flag, **bounds), show_default=default is not None)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def parameter(name: str, tp: Any, default: Any, help: str, bounds: dict[str, float] | None = None,
              flag: str | None = None, probe: type | None = None) -> inspect.Parameter:
    """One typer option as an :class:`inspect.Parameter` (``--name`` or ``flag``).

    Ints and floats parse with :class:`Number`; ``tuple[float, ...]`` as comma-separated numbers;
    bools become ``--name/--no-name`` switches. ``default=None`` on a non-optional type means
    "filled in by the command" (a preset or a task default).

    Example:
        >>> parameter("steps", int, 5, "Steps.", {"ge": 1}).default.default
        5
    """
    base, _ = _strip_optional(tp)
    flag = flag or "--" + name.replace("_", "-")
    kw: dict[str, Any] = {"help": help, "show_default": default is not None and not isinstance(default, tuple)}
    annotation: Any = Optional[base] if default is None else base
    if base in (int, float):
        kw["parser"] = Number(base, flag, **(bounds or {}), probe=(probe, name) if probe else None)
        option = typer.Option(default, flag, **kw)
    elif base is bool:
        option = typer.Option(default, f"{flag}/--no-{flag[2:]}", **kw)
    elif typing.get_origin(base) is tuple:
        elem = typing.get_args(base)[0]
        kw["parser"] = NumberList(elem, flag, **(bounds or {}))
        annotation = Optional[str] if default is None else str
        text = ",".join(_fmt(v) for v in default) if default is not None else None
        option = typer.Option(text, flag, **{**kw, "show_default": default is not None})
    else:
        option = typer.Option(default, flag, **kw)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


class NumberList:
    """Parser of comma-separated numbers, each checked by :class:`Number`; gives a tuple.

    Example:
        >>> NumberList(float, "--l1", gt=0)("0.1,0.3")
        (0.1, 0.3)
    """

    def __init__(self, kind: type, flag: str = "value", **bounds: Any) -> None:
        self.item = Number(kind, flag, **bounds)

    def __call__(self, value: Any) -> Any:
        if value is None or isinstance(value, tuple):
            return value
        items = [v for v in str(value).split(",") if v.strip()]
        if not items:
            self.item.fail(f"needs at least one comma-separated number, got {value!r}.")
        return tuple(self.item(v) for v in items)

    def bounds(self) -> dict[str, float]:
        """The bounds of each item."""
        return self.item.bounds()


def options_from(cls: type, *, skip: Sequence[str] = (), defaults: dict[str, Any] | None = None,
                 helps: dict[str, str] | None = None, probe: bool = False) -> list[inspect.Parameter]:
    """Typer parameters for the fields of dataclass ``cls`` (defaults from the fields unless overridden).

    ``defaults``: replace a field's default (``None``: left to the command). ``helps``: help
    for fields declared without :func:`setting`. ``probe``: validate each value with ``cls``'s own
    checks as well as the declared bounds.

    Example:
        >>> from interplab.train import TrainConfig
        >>> ps = options_from(TrainConfig, skip=("betas",), probe=True)
        >>> ps[0].name, ps[0].default.default
        ('epochs', 1000)
    """
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = (defaults or {}).get(f.name, f.default)
        help = f.metadata.get("help") or (helps or {}).get(f.name, f.name.replace("_", " ").capitalize() + ".")
        out.append(parameter(f.name, hints[f.name], default, help, f.metadata.get("bounds"), f.metadata.get("flag"),
                             probe=cls if probe else None))
    return out


def command(body: Callable[..., Any], params: list[inspect.Parameter], doc: str) -> Callable[..., Any]:
    """A typer command function with ``params`` (keyword arguments) that calls ``body(**values)``.

    Example:
        >>> f = command(lambda **kw: kw, [parameter("n", int, 3, "N.")], "Echo.")
        >>> f(n=4), f.__doc__
        ({'n': 4}, 'Echo.')
    """

    def fn(**kwargs: Any) -> Any:
        return body(**kwargs)

    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {p.name: p.annotation for p in params}
    fn.__doc__ = doc
    return fn


def common(*, out_default: Any = ..., out_help: str = "Output directory.") -> list[inspect.Parameter]:
    """The ``--out`` and ``--quiet`` options every study shares.

    Example:
        >>> [p.name for p in common()]
        ['out', 'quiet']
    """
    return [inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                              default=typer.Option(out_default, "--out", help=out_help)),
            inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                              default=typer.Option(False, "--quiet", help="No progress bars."))]


def study_command(settings_cls: type, run: Callable[..., Any], presets: dict[str, Any], doc: str,
                  extra: Sequence[inspect.Parameter] = (), out_default: Any = ...,
                  settings_arg: str | None = None) -> Callable[..., Any]:
    """The CLI of a study: ``--out``, ``--quiet``, ``--quick`` (when a quick preset exists), one option per
    field of ``settings_cls`` and ``extra``; calls ``run(out, **fields, **extra, quiet=quiet)``, or
    ``run(out, **{settings_arg: settings}, **extra, quiet=quiet)`` when ``settings_arg`` is given.

    An option not given takes its value from the chosen preset (``full``, or ``quick`` with
    ``--quick``). When ``run`` takes ``device`` and ``dtype`` arguments, the command also gets
    ``--device``/``--dtype`` (:func:`placement_options`) and passes them on.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class S:
        ...     n: int = setting(8, "Items.", ge=1)
        >>> cmd = study_command(S, lambda out, quiet, **kw: kw, {"full": S(), "quick": S(n=2)}, "Demo.")
        >>> cmd(out=".", quiet=True, quick=True, n=None)
        {'n': 2}
    """
    full = presets["full"]
    quick = presets.get("quick")
    fields = {f.name: f for f in dataclasses.fields(settings_cls)}
    params = common(out_default=out_default)
    if quick is not None:
        params.append(inspect.Parameter("quick", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                        default=typer.Option(False, "--quick", help="Use the quick preset.")))
    helps = {}
    for name, f in fields.items():
        text = f.metadata.get("help", "")
        fv, qv = getattr(full, name), getattr(quick, name) if quick is not None else None
        show = (lambda v: ",".join(_fmt(x) for x in v) if isinstance(v, tuple) else _fmt(v) if v is not None else "none")
        text += f" (full: {show(fv)}" + (f"; quick: {show(qv)})" if quick is not None and qv != fv else ")")
        helps[name] = text
    hints = typing.get_type_hints(settings_cls)
    for name, f in fields.items():
        params.append(parameter(name, hints[name], None, helps[name], f.metadata.get("bounds"), f.metadata.get("flag")))
    params.extend(extra)
    extra_names = [p.name for p in extra]
    if {"device", "dtype"} <= set(inspect.signature(run).parameters):  # a study that can run on a GPU
        params.extend(placement_options())
        extra_names += ["device", "dtype"]

    def body(out: Path, quiet: bool, quick: bool = False, **kwargs: Any) -> Any:
        preset = presets["quick"] if quick else full
        given = {k: v for k, v in kwargs.items() if k in fields and v is not None}
        settings = dataclasses.replace(preset, **given)
        rest = {k: kwargs[k] for k in extra_names}
        if settings_arg:
            return run(out, **{settings_arg: settings}, **rest, quiet=quiet)
        return run(out, **{f: getattr(settings, f) for f in fields}, **rest, quiet=quiet)

    return command(body, params, doc)


def placement_options() -> list[inspect.Parameter]:
    """The ``--device`` and ``--dtype`` options, generated from :class:`interplab.devices.Placement`.

    Example:
        >>> [p.name for p in placement_options()]
        ['device', 'dtype']
    """
    from interplab.devices import Placement

    return options_from(Placement)


def with_placement(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A hand-written typer command ``fn(..., placement)`` given ``--device`` and ``--dtype`` options
    (generated by :func:`placement_options`); it receives them as one checked ``Placement``, and a
    device this machine lacks is refused before ``fn`` runs.

    Example:
        >>> cmd = with_placement(lambda n, placement: (n, placement.dtype))
        >>> list(inspect.signature(cmd).parameters), cmd(n=1, device="cpu", dtype="float64")
        (['n', 'device', 'dtype'], (1, 'float64'))
    """
    from interplab.devices import Placement

    hints = typing.get_type_hints(fn)  # resolved in fn's module (annotations may be strings there)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(fn).parameters.values() if p.name != "placement"]

    def body(device: str, dtype: str, **kwargs: Any) -> Any:
        placement = Placement(device, dtype)
        return fn(**kwargs, placement=placement)

    wrapped = command(body, own + placement_options(), fn.__doc__ or "")
    wrapped.__name__ = getattr(fn, "__name__", "command")
    return wrapped


__all__ = ["CAP", "Number", "NumberList", "setting", "number", "parameter", "options_from", "command", "common",
           "study_command", "placement_options", "with_placement"]
