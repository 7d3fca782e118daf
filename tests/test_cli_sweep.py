"""Every numeric option of every command, at 0, negative, huge and of the wrong type, gives one sentence and exit 2.

The commands and their options are read from the typer app itself, so a new command, study or
dataclass field is swept without touching this file. An int/float option that does not parse
through :class:`interplab.options.Number` fails the test (it would not be validated).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from interplab import cli
from interplab.options import Number, NumberList


def _commands(app, prefix=()):
    for info in app.registered_commands:
        yield (*prefix, info.name or info.callback.__name__.replace("_", "-")), info.callback
    for group in app.registered_groups:
        yield from _commands(group.typer_instance, (*prefix, group.name))


def _options(callback):
    for p in inspect.signature(callback).parameters.values():
        info = p.default
        yield p, info


def _required_args(callback, tmp: Path) -> list[str]:
    args: list[str] = []
    for p, info in _options(callback):
        if getattr(info, "default", None) is not ...:
            continue
        decls = [d for d in (getattr(info, "param_decls", None) or ()) if d.startswith("--")]
        value = "modular-addition" if p.name == "task" else str(tmp / p.name) if p.annotation in (Path, "Path") \
            else "blocks.0.mlp.hook_post" if p.name == "site" else str(tmp / p.name)
        args += [decls[0], value] if decls else [value]
    return args


def _bad_values(parser) -> list[str]:
    b = parser.bounds()
    kind = parser.item.kind if isinstance(parser, NumberList) else parser.kind
    low = b.get("ge", b.get("gt"))
    values = [v for v in ("0", "-1") if low is not None and (float(v) < low or (float(v) == low and "gt" in b))]
    if low is None:  # negative values allowed (positions): the sweep checks the magnitude cap from below
        values.append("-" + "9" * 30)
    values += ["9" * 30, "abc"]
    if kind is float:
        values += ["nan", "inf"]
    return values


def test_every_numeric_option_rejects_bad_values_in_one_sentence(tmp_path, capsys) -> None:
    cli._register()
    n_commands = n_options = n_cases = 0
    unvalidated = []
    for path, callback in _commands(cli.app):
        n_commands += 1
        base = _required_args(callback, tmp_path)
        for p, info in _options(callback):
            parser = getattr(info, "parser", None)
            if not isinstance(parser, (Number, NumberList)):
                ann = str(p.annotation)
                if any(t in ann for t in ("int", "float")) and "Path" not in ann:
                    unvalidated.append(f"{' '.join(path)} {p.name}")
                continue
            n_options += 1
            flag = parser.item.flag if isinstance(parser, NumberList) else parser.flag
            for value in _bad_values(parser):
                n_cases += 1
                with pytest.raises(SystemExit) as exc:
                    cli.main([*path, *base, flag, value])
                err = capsys.readouterr().err
                lines = [ln for ln in err.splitlines() if ln.strip()]
                assert exc.value.code == 2, (path, flag, value, err)
                assert len(lines) == 1 and lines[0].startswith(f"error: {flag} "), (path, flag, value, err)
                assert lines[0].endswith(".") and lines[0].count(". ") == 0, lines[0]
    assert not unvalidated, f"numeric options not parsed by interplab.options.Number: {unvalidated}"
    assert n_commands >= 11 and n_options >= 60
    print(f"cli sweep: {n_commands} commands, {n_options} options, {n_cases} cases, all one-sentence exit 2")


def test_sae_train_position_out_of_range_and_d_sae_zero(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "modular-addition", "--p", "5", "--epochs", "2", "--out", str(run), "--quiet"])
    assert exc.value.code == 0
    capsys.readouterr()
    for extra, expected in ((["--position", "99"], "error: --position 99 is out of range for blocks.0.mlp.hook_post, "
                             "which has 3 positions."),
                            (["--d-sae", "0"], "error: --d-sae must be at least 1, got 0.")):
        with pytest.raises(SystemExit) as exc:
            cli.main(["sae", "train", "--run", str(run), "--site", "blocks.0.mlp.hook_post", "--out",
                      str(tmp_path / "sae"), *extra])
        assert exc.value.code == 2
        assert capsys.readouterr().err.strip() == expected
