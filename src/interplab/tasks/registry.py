"""Task registrations: one place per task for its builder, its CLI options and its training defaults.

A :class:`TaskSpec` names a builder (whose keyword defaults are the task's option defaults: one
home), which of its parameters the command line exposes (with help and bounds), the parameters
fixed by the name (``op`` for the modular tasks), and the :class:`~interplab.train.TrainConfig`
fields that make the task learn. ``interplab train TASK`` and :func:`interplab.tasks.make_task`
are built from :data:`TASKS`. Registering a new task is one :func:`register` call in its module's
family below (see ``docs/DEVELOPING.md``).

Example:
    >>> spec = TASKS["modular-addition"]
    >>> spec.option_defaults()["p"], spec.train["weight_decay"]
    (113, 10.0)
    >>> spec.build({"p": 5}, seed=0).inputs.shape
    torch.Size([25, 3])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from interplab.errors import check


@dataclass(frozen=True)
class Option:
    """A builder parameter exposed on the command line: its help and bounds (see :mod:`interplab.options`)."""

    help: str
    bounds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """One task: ``builder(**fixed, **options, seed=...)`` returns it; ``train`` holds TrainConfig defaults.

    ``data_dir``: the builder takes a ``data_dir`` argument (tasks that read files).
    """

    name: str
    builder: Callable[..., Any]
    options: dict[str, Option]
    train: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)
    data_dir: bool = False

    def option_defaults(self) -> dict[str, Any]:
        """The builder's defaults for the exposed options (the one home of those defaults)."""
        params = inspect.signature(self.builder).parameters
        return {name: params[name].default for name in self.options}

    def build(self, options: dict[str, Any], seed: int = 0, data_dir: Any = None) -> Any:
        """The task with ``options`` (names from :attr:`options`; omitted ones take the builder's defaults)."""
        unknown = [k for k in options if k not in self.options]
        check(not unknown, f"--{unknown[0].replace('_', '-') if unknown else ''} does not apply to {self.name} "
              f"(its options: {', '.join('--' + o.replace('_', '-') for o in self.options) or 'none'}).")
        extra = {"data_dir": data_dir} if self.data_dir else {}
        return self.builder(**self.fixed, **options, seed=seed, **extra)


TASKS: dict[str, TaskSpec] = {}
"""Every registered task by name, in registration order."""


def register(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to :data:`TASKS` (a name may be registered once).

    Example:
        >>> "sorting" in TASKS
        True
    """
    check(spec.name not in TASKS, f"Task {spec.name!r} is registered twice.")
    TASKS[spec.name] = spec
    return spec


FRAC = Option("Fraction of examples used for training.", {"gt": 0, "le": 1})
N_VALUES = Option("(sequences) Number of token values.", {"ge": 2, "le": 100_000})
N_EXAMPLES = Option("(sequences) Number of sequences.", {"ge": 2, "le": 10_000_000})
LENGTH = Option("(induction, previous-token) Sequence length.", {"ge": 2, "le": 4096})


def _register_builtin() -> None:
    from interplab.tasks import ioi, memorization, modular, names, pair_labels, sequences

    modular_train = {"epochs": 3000, "lr": 1e-3, "weight_decay": 10.0}
    for name, op in (("modular-addition", "+"), ("modular-subtraction", "-"), ("modular-division", "/")):
        register(TaskSpec(name, modular.modular_task,
                          {"p": Option("(modular) The modulus (a prime for division).", {"ge": 2, "le": 3000}),
                           "frac_train": FRAC}, modular_train, fixed={"op": op}))
    register(TaskSpec("pair-labels", pair_labels.pair_label_task,
                      {"labels": Option("(pair-labels) 'published', 'builtin', or a path/URL of a numpy-only label "
                                        "pickle (default: published if the data directory has it, else builtin)."),
                       "frac_train": FRAC},
                      {"epochs": 5000, "lr": 5e-4, "weight_decay": 1.0}, data_dir=True))
    register(TaskSpec("sorting", sequences.sorting_task,
                      {"n_values": N_VALUES, "k": Option("(sorting) List length.", {"ge": 1, "le": 1024}),
                       "n_examples": N_EXAMPLES, "frac_train": FRAC},
                      {"epochs": 300, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 256}))
    register(TaskSpec("min-max", sequences.min_max_task, {"n_values": N_VALUES, "frac_train": FRAC},
                      {"epochs": 500, "lr": 1e-3, "weight_decay": 0.1, "batch_size": 512}))
    register(TaskSpec("induction", sequences.induction_task,
                      {"n_values": N_VALUES, "length": LENGTH, "n_examples": N_EXAMPLES, "frac_train": FRAC},
                      {"epochs": 200, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 256}))
    register(TaskSpec("previous-token", sequences.previous_token_task,
                      {"n_values": N_VALUES, "length": LENGTH, "n_examples": N_EXAMPLES, "frac_train": FRAC},
                      {"epochs": 100, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 256}))
    register(TaskSpec("memorization", memorization.memorization_task,
                      {"n": Option("(memorization) Integers per side of a pair.", {"ge": 1, "le": 3000}),
                       "n_classes": Option("(memorization) Number of random labels.", {"ge": 2, "le": 100_000}),
                       "frac_train": FRAC},
                      {"epochs": 500, "lr": 1e-3, "weight_decay": 0.0}))
    register(TaskSpec("two-token-names", names.two_token_names_task,
                      {"n_first": Option("(two-token-names) First-name tokens.", {"ge": 2, "le": 100_000}),
                       "n_last": Option("(two-token-names) Last-name tokens.", {"ge": 2, "le": 100_000}),
                       "n_names": Option("(two-token-names) Names, each a random (first, last) pair.",
                                         {"ge": 1, "le": 10_000_000}),
                       "n_attributes": Option("(two-token-names) Attribute values.", {"ge": 2, "le": 100_000})},
                      {"epochs": 3000, "lr": 3e-3, "weight_decay": 0.1}))
    register(TaskSpec("ioi", ioi.ioi_task, {"n_examples": N_EXAMPLES, "frac_train": FRAC},
                      {"epochs": 3, "lr": 3e-3, "weight_decay": 0.01, "batch_size": 128}))
    from interplab.tasks.lm import lm_task

    register(TaskSpec("lm", lm_task,
                      {"corpus": Option("(lm) Corpus directory with tokens.bin and tokenizer.json (from `interplab "
                                        "corpus make` or `interplab corpus tokenize`)."),
                       "n_ctx": Option("(lm) Context length in tokens.", {"ge": 2, "le": 65536}),
                       "rows_per_epoch": Option("(lm) Rows drawn per epoch.", {"ge": 1, "le": 10_000_000_000})},
                      {"epochs": 30, "lr": 1e-3, "weight_decay": 0.1, "batch_size": 32}))


_register_builtin()

__all__ = ["Option", "TaskSpec", "TASKS", "register"]
