"""Training an SAE on a site of a hooked model: buffer, Adam, dead-feature fixes, exact resume.

``train_sae(sae, buffer, SAETrainConfig(...), out_dir)`` draws batches from an
:class:`~interplab.sae.buffer.ActivationBuffer`, minimizes ``||x - x_hat||^2 + l1 ||f||_1``
with Adam (``betas`` default ``(0, 0.999)``), projects the decoder gradient and renormalizes
the decoder after every step, and fixes dead features with one of :data:`DEAD_FIXES`:
``resample`` (every ``resample_every`` steps, see :mod:`interplab.sae.resample`) or ghost
grads (``ghost-original``, ``ghost-scaled``, ``ghost-dead-only``, see :mod:`interplab.sae.ghost`).
A feature is dead when it has not fired for ``dead_window`` steps. The seed's variants:
``decoder_norm="at-most-1"`` (rows clipped to norm <= 1 after each step instead of held at 1)
with ``weight_decay`` (decoupled, on ``W_enc`` and ``W_dec``); no pre-encoder bias
(``SAEConfig(apply_b_dec_to_input=False)``); ``ghost_all_steps`` (ghost grads on every feature
for the first K steps) and ``ghost_stop_step`` (ghost grads off from step S on).

Why not :func:`interplab.train.train`: its loop has no place between ``backward`` and
``optimizer.step`` for the decoder-gradient projection nor after the step for the
renormalization, resampling must reset Adam's moments for single rows so it needs the
optimizer, and its checkpoint holds only model, optimizer and generator, while exact resume
here also needs the activation buffer and the per-feature firing counters. The conventions
are the same: ``checkpoints/state.pt`` (``torch.save``, read back with ``weights_only=True``
through :class:`interplab.runs.RunLog`, the writer :func:`interplab.train.train` uses too; its
``epoch`` counts steps), atomic writes, ``metrics.jsonl``, one generator for all randomness,
the numerics of :mod:`interplab.numerics`. :func:`train_sae_or_resume` is the run policy of
studies (reuse a run made with the same settings, refuse one made with others). With
``out_dir`` the finished SAE is written there in the SAELens layout (``cfg.json`` + ``sae_weights.safetensors``).

Example:
    >>> import tempfile, torch
    >>> from interplab.models import MLP, MLPConfig
    >>> from interplab.instrument import Site
    >>> from interplab.sae.buffer import sample_rows
    >>> from interplab.sae.model import SAE, SAEConfig
    >>> model = MLP(MLPConfig(d_in=8, d_hidden=(16,), d_out=2), seed=0)
    >>> cfg = SAETrainConfig(steps=30, batch_size=32, buffer_size=256, log_every=10, dead_fix="ghost-scaled")
    >>> buf = make_buffer(model, Site("layers.0.hook_post"), sample_rows(torch.randn(500, 8)), cfg)
    >>> sae = SAE(SAEConfig(d_in=16, d_sae=32, hook_name="layers.0.hook_post"))
    >>> result = train_sae(sae, buf, cfg, tempfile.mkdtemp(), quiet=True)
    >>> [m["step"] for m in result.metrics], result.metrics[-1]["mse"] < result.metrics[0]["mse"]
    ([1, 10, 20, 30], True)
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from interplab.devices import dtype_name, model_device
from interplab.errors import InterplabError, check
from interplab.instrument import Site
from interplab.io import PathLike, atomic_write_json
from interplab.numerics import numerics
from interplab.runs import RunLog, check_settings, state_path
from interplab.sae.buffer import ActivationBuffer, Sampler
from interplab.sae.ghost import ghost_loss
from interplab.sae.metrics import variance_explained
from interplab.sae.model import SAE, SAEOutput
from interplab.sae.resample import resample_dead
from interplab.sae.saelens import save_saelens

DEAD_FIXES = ("none", "resample", "ghost-original", "ghost-scaled", "ghost-dead-only", "ghost-seed-dead-only")
DECODER_NORMS = ("unit", "at-most-1")


@dataclass(frozen=True)
class SAETrainConfig:
    """Settings of :func:`train_sae`.

    ``l1_warmup_steps``: the L1 coefficient ramps linearly from 0. ``init_b_dec``: ``mean``
    sets ``b_dec`` to the mean of the first buffer, ``zero`` leaves it. ``resample_every``:
    resampling happens at multiples of it, except in the last ``resample_every`` steps, on
    ``resample_rows`` fresh rows. ``ghost_capped``: use ``exp(min(pre, 0))``.
    ``ghost_all_steps``: with a ghost ``dead_fix``, every feature counts as dead for the ghost
    loss during the first that many steps. ``ghost_stop_step``: no ghost loss from that step on
    (0: never stops). ``autocast``: run the forward pass under bfloat16 autocast on the SAE's
    device (weights and optimizer stay in their dtype). ``tf32``: allow TF32 matmuls on CUDA for
    the run (no effect elsewhere). ``decoder_norm``: ``unit`` (rows held at norm 1) or ``at-most-1`` (rows
    longer than 1 clipped back after each step). ``weight_decay``: decoupled decay
    ``W <- W (1 - lr wd)`` of ``W_enc`` and ``W_dec`` after each step.

    Example:
        >>> SAETrainConfig(dead_fix="ghosts")
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: dead_fix must be one of none, resample, ghost-original, ghost-scaled, ghost-dead-only, ghost-seed-dead-only, got 'ghosts'.
    """

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.999)
    l1_coeff: float = 1e-3
    l1_warmup_steps: int = 0
    init_b_dec: str = "mean"
    buffer_size: int = 16384
    model_batch: int = 1024
    dead_fix: str = "none"
    dead_window: int = 200
    resample_every: int = 500
    resample_rows: int = 4096
    ghost_capped: bool = True
    autocast: bool = False
    tf32: bool = False
    ghost_all_steps: int = 0
    ghost_stop_step: int = 0
    decoder_norm: str = "unit"
    weight_decay: float = 0.0
    seed: int = 0
    log_every: int = 100
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        check(self.steps >= 1, f"steps must be at least 1, got {self.steps}.")
        check(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}.")
        check(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}.")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"betas must be two numbers in [0, 1), got {self.betas}.")
        check(self.l1_coeff >= 0, f"l1_coeff must be non-negative, got {self.l1_coeff}.")
        check(self.l1_warmup_steps >= 0, f"l1_warmup_steps must be non-negative, got {self.l1_warmup_steps}.")
        check(self.init_b_dec in ("mean", "zero"), f"init_b_dec must be mean or zero, got {self.init_b_dec!r}.")
        check(self.buffer_size >= 2 * self.batch_size, f"buffer_size ({self.buffer_size}) must be at least twice "
              f"batch_size ({self.batch_size}).")
        check(self.dead_fix in DEAD_FIXES, f"dead_fix must be one of {', '.join(DEAD_FIXES)}, got {self.dead_fix!r}.")
        check(self.decoder_norm in DECODER_NORMS, f"decoder_norm must be one of {', '.join(DECODER_NORMS)}, "
              f"got {self.decoder_norm!r}.")
        check(self.weight_decay >= 0, f"weight_decay must be non-negative, got {self.weight_decay}.")
        check(self.ghost_all_steps >= 0 and self.ghost_stop_step >= 0, "ghost_all_steps and ghost_stop_step must be "
              "non-negative.")
        for name in ("dead_window", "resample_every", "resample_rows", "log_every", "checkpoint_every", "model_batch"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}.")

    def ghost_dead(self, step: int, since_fired: torch.Tensor) -> torch.Tensor | None:
        """The features the ghost loss acts on at (0-based) ``step``: all of them during the first
        ``ghost_all_steps``, none (None) from ``ghost_stop_step`` on or without ghost grads, else
        those that have not fired for ``dead_window`` steps.

        Example:
            >>> c = SAETrainConfig(dead_fix="ghost-original", dead_window=2, ghost_all_steps=3, ghost_stop_step=10)
            >>> since = torch.tensor([0, 5])
            >>> c.ghost_dead(0, since).tolist(), c.ghost_dead(3, since).tolist(), c.ghost_dead(10, since)
            ([True, True], [False, True], None)
        """
        if not self.dead_fix.startswith("ghost-") or (self.ghost_stop_step and step >= self.ghost_stop_step):
            return None
        if step < self.ghost_all_steps:
            return torch.ones_like(since_fired, dtype=torch.bool)
        return since_fired >= self.dead_window

    def l1_at(self, step: int) -> float:
        """The L1 coefficient at (0-based) ``step``.

        Example:
            >>> SAETrainConfig(l1_coeff=1.0, l1_warmup_steps=4).l1_at(1)
            0.5
        """
        if self.l1_warmup_steps == 0:
            return self.l1_coeff
        return self.l1_coeff * min(1.0, (step + 1) / self.l1_warmup_steps)


@dataclass
class SAETrainResult:
    """What :func:`train_sae` returns: logged metrics (across resumes) and resampling events."""

    metrics: list[dict[str, Any]] = field(default_factory=list)
    steps_run: int = 0
    resampled: list[tuple[int, int]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """The last logged metrics."""
        return self.metrics[-1] if self.metrics else {}


def make_buffer(model: torch.nn.Module, site: Site, sampler: Sampler, cfg: SAETrainConfig) -> ActivationBuffer:
    """An :class:`ActivationBuffer` sized by ``cfg`` (``buffer_size`` rows, ``model_batch`` inputs
    per model call); :func:`train_sae` seeds its generator.

    Example:
        >>> from interplab.models import MLP, MLPConfig
        >>> from interplab.sae.buffer import sample_rows
        >>> m = MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=2))
        >>> make_buffer(m, Site("layers.0.hook_post"), sample_rows(torch.randn(10, 4)), SAETrainConfig()).size
        16384
    """
    return ActivationBuffer(model, site, sampler, torch.Generator(), size=cfg.buffer_size, model_batch=cfg.model_batch)


def _autocast(sae: SAE, enabled: bool) -> Any:
    return torch.autocast(device_type=sae.W_dec.device.type, dtype=torch.bfloat16, enabled=enabled)


def sae_optimizer(sae: SAE, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """Adam over the SAE's parameters, with PyTorch's fused kernel on CPU and CUDA (one pass over
    each tensor instead of several; the same update).

    Example:
        >>> from interplab.sae.model import SAEConfig
        >>> sae_optimizer(SAE(SAEConfig(d_in=4, d_sae=8)), 1e-3, (0.0, 0.999)).defaults["fused"]
        True
    """
    fused = model_device(sae).type in ("cpu", "cuda")
    return torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, fused=fused or None)


def sae_step(
    sae: SAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    l1_coeff: float,
    dead: torch.Tensor | None = None,
    ghost: str | None = None,
    ghost_capped: bool = True,
    decoder_norm: str = "unit",
    weight_decay: float = 0.0,
    autocast: bool = False,
) -> tuple[SAEOutput, torch.Tensor, torch.Tensor | None]:
    """One optimizer step on batch ``x``: loss (plus the ghost term for ``dead`` features when
    ``ghost`` names a variant), backward, decoder-gradient projection, step, renormalization
    (``decoder_norm="at-most-1"``: no projection, rows clipped to norm <= 1; ``weight_decay``:
    decoupled decay of ``W_enc`` and ``W_dec``).

    ``x`` is moved to the SAE's device and dtype; ``autocast`` runs the forward pass under
    bfloat16 autocast. Returns the :class:`SAEOutput`, the total loss and the ghost loss (None
    without ghost grads).

    Example:
        >>> from interplab.sae.model import SAEConfig
        >>> sae = SAE(SAEConfig(d_in=4, d_sae=8))
        >>> opt = torch.optim.Adam(sae.parameters(), lr=1e-3, betas=(0.0, 0.999))
        >>> out, loss, aux = sae_step(sae, opt, torch.randn(16, 4), 1e-3)
        >>> aux is None, round(float(sae.W_dec.detach().norm(dim=1).max()), 5)
        (True, 1.0)
    """
    x = x.to(sae.W_dec)
    with _autocast(sae, autocast):
        out = sae.loss(x, l1_coeff)
        loss = out.loss
        aux = ghost_loss(sae, x, out, dead, ghost, ghost_capped) if ghost and dead is not None else None
        if aux is not None:
            loss = loss + aux
    if not torch.isfinite(loss):
        raise InterplabError(f"SAE training diverged: the loss became {loss.item()}; try a lower learning rate.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if decoder_norm == "unit":
        sae.project_decoder_grad()
    optimizer.step()
    if weight_decay:
        with torch.no_grad():
            decay = 1 - optimizer.param_groups[0]["lr"] * weight_decay
            sae.W_enc.mul_(decay)
            sae.W_dec.mul_(decay)
    if decoder_norm == "unit":
        sae.normalize_decoder()
    else:
        sae.clip_decoder()
    return out, loss, aux


def train_sae(
    sae: SAE,
    buffer: ActivationBuffer,
    cfg: SAETrainConfig,
    out_dir: PathLike | None = None,
    resume: bool = False,
    quiet: bool = False,
    model_name: str = "",
) -> SAETrainResult:
    """Train ``sae`` on batches from ``buffer``; see the module docstring.

    The buffer's generator is reseeded from ``cfg.seed``. ``resume=True`` continues from
    ``out_dir/checkpoints/state.pt`` and ends bitwise-equal to an uninterrupted run; without
    it an ``out_dir`` that already holds a checkpoint is refused. A JumpReLU SAE is refused:
    it loads and runs here (:mod:`interplab.sae.saelens`) but is not trainable (its threshold
    would need the straight-through estimator of Rajamanoharan et al. 2024, not implemented).
    """
    check(sae.cfg.architecture != "jumprelu", "JumpReLU SAEs can be loaded and used but not trained here; train "
          "a standard or topk SAE.")
    check(buffer.size >= 2 * cfg.batch_size, f"The buffer ({buffer.size} rows) must hold at least twice "
          f"batch_size ({cfg.batch_size}).")
    with numerics():
        return _train_sae(sae, buffer, cfg, out_dir, resume, quiet, model_name)


def _train_sae(sae: SAE, buffer: ActivationBuffer, cfg: SAETrainConfig, out_dir: PathLike | None, resume: bool,
               quiet: bool, model_name: str) -> SAETrainResult:
    run = RunLog(out_dir, resume, key="step", what="SAE training run")
    generator = buffer.generator
    generator.manual_seed(cfg.seed)
    optimizer = sae_optimizer(sae, cfg.lr, cfg.betas)
    device = sae.W_dec.device
    since_fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long, device=device)
    resampled: list[tuple[int, int]] = []
    if run.state is not None:
        state = run.state
        try:
            sae.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            buffer.load_state_dict(state["buffer"])
            since_fired = state["since_fired"].to(device)
        except (KeyError, RuntimeError, ValueError) as e:
            raise InterplabError(f"Checkpoint {state_path(run.out or '')} does not fit this SAE "
                                 f"({str(e)[:80]}).") from None
        resampled = [tuple(r) for r in state.get("resampled", torch.zeros(0, 2, dtype=torch.long)).tolist()]
    else:
        buffer.rows, buffer.ptr = None, 0
        if cfg.init_b_dec == "mean":
            buffer.d  # fills the buffer
            assert buffer.rows is not None
            with torch.no_grad():
                sae.b_dec.copy_(buffer.rows.mean(0, dtype=torch.promote_types(buffer.rows.dtype, torch.float32)))
    if run.out is not None:
        run.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.out / "train_config.json", {**_stored_settings(sae, buffer, cfg), "placement": {
            "device": str(device), "dtype": dtype_name(sae.W_dec.dtype)}})
    start = run.start
    t0 = time.perf_counter() - run.elapsed
    t_log, step_log = time.perf_counter(), start
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    ghost = cfg.dead_fix.removeprefix("ghost-") if cfg.dead_fix.startswith("ghost-") else None
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=quiet, desc="sae", unit="step")
    done = start
    with run:
        try:
            for step in bar:
                sae.train()
                x = buffer.next(cfg.batch_size).to(sae.W_dec)
                dead = cfg.ghost_dead(step, since_fired)
                out_, loss, aux = sae_step(sae, optimizer, x, cfg.l1_at(step), dead, ghost, cfg.ghost_capped,
                                           cfg.decoder_norm, cfg.weight_decay, cfg.autocast)
                with torch.no_grad():
                    fired = (out_.f > 0).any(0)
                    since_fired = torch.where(fired, 0, since_fired + 1)
                done = step + 1
                if (cfg.dead_fix == "resample" and done % cfg.resample_every == 0
                        and done <= cfg.steps - cfg.resample_every):
                    dead = since_fired >= cfg.dead_window
                    rows = torch.cat([buffer.next(cfg.batch_size)
                                      for _ in range(max(1, cfg.resample_rows // cfg.batch_size))])
                    n = resample_dead(sae, rows, dead, generator, optimizer)
                    since_fired[dead] = 0
                    if n:
                        resampled.append((done, n))
                if done == 1 or done % cfg.log_every == 0 or done == cfg.steps:
                    now = time.perf_counter()
                    with torch.no_grad():
                        row = {"step": done, "loss": loss.item(), "mse": out_.mse.item(), "l1": out_.l1.item(),
                               "l0": (out_.f > 0).float().sum(-1).mean().item(),
                               "dead": int((since_fired >= cfg.dead_window).sum()),
                               "ghost_loss": aux.item() if aux is not None else 0.0,
                               "rows_per_s": round((done - step_log) * cfg.batch_size / max(now - t_log, 1e-9), 1),
                               "time": round(now - t0, 3)}
                        if bool(((x - x.mean(0)).pow(2).sum()) > 0):  # undefined without variance: left out
                            row["variance_explained"] = variance_explained(x, out_.x_hat)
                    run.log(row)
                    bar.set_postfix({k: f"{row[k]:.3g}" for k in ("mse", "l0", "dead", "rows_per_s")})
                    t_log, step_log = time.perf_counter(), done
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    run.checkpoint({"epoch": done, "model": sae.state_dict(), "optimizer": optimizer.state_dict(),
                                    "generator": generator.get_state(), "buffer": buffer.state_dict(),
                                    "since_fired": since_fired,
                                    "resampled": torch.tensor(resampled, dtype=torch.long).reshape(-1, 2),
                                    "finished": done == cfg.steps})
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32_before
            bar.close()
    sae.eval()
    if run.out is not None:
        save_saelens(sae, run.out, model_name=model_name,
                     extra={"interplab_train": {k: v for k, v in dataclasses.asdict(cfg).items()}})
    return SAETrainResult(run.metrics, done, resampled)


def _stored_settings(sae: SAE, buffer: ActivationBuffer, cfg: SAETrainConfig) -> dict[str, Any]:
    return {"sae": dataclasses.asdict(sae.cfg), "train": dataclasses.asdict(cfg),
            "site": {"name": buffer.site.name, "position": buffer.site.position}}


def train_sae_or_resume(sae: SAE, buffer: ActivationBuffer, cfg: SAETrainConfig, out_dir: PathLike,
                        quiet: bool = False, model_name: str = "") -> SAETrainResult:
    """The run policy of studies for SAEs: train into ``out_dir``, or continue (or reload) the
    SAE run there when its stored SAE config, training config and site equal these; refuse one
    made with other settings with one sentence.

    Example:
        >>> import tempfile
        >>> from interplab.models import MLP, MLPConfig
        >>> from interplab.sae.buffer import sample_rows
        >>> from interplab.sae.model import SAEConfig
        >>> model, out = MLP(MLPConfig(d_in=4, d_hidden=(8,), d_out=2), seed=0), tempfile.mkdtemp()
        >>> cfg = SAETrainConfig(steps=4, batch_size=8, buffer_size=32, log_every=2)
        >>> def fit(c):
        ...     buf = make_buffer(model, Site("layers.0.hook_post"), sample_rows(torch.randn(50, 4)), c)
        ...     return train_sae_or_resume(SAE(SAEConfig(d_in=8, d_sae=16)), buf, c, out, quiet=True)
        >>> fit(cfg).steps_run, fit(cfg).steps_run
        (4, 4)
        >>> fit(dataclasses.replace(cfg, l1_coeff=0.1))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        interplab.errors.InterplabError: The run in ... was made with other settings (train.l1_coeff: 0.001 there, 0.1 now); choose another --out or delete it.
    """
    resume = state_path(out_dir).exists()
    if resume:
        check_settings(Path(out_dir) / "train_config.json", _stored_settings(sae, buffer, cfg))
    return train_sae(sae, buffer, cfg, out_dir, resume=resume, quiet=quiet, model_name=model_name)


__all__ = ["DEAD_FIXES", "SAETrainConfig", "SAETrainResult", "make_buffer", "sae_optimizer", "sae_step", "train_sae",
           "train_sae_or_resume"]
