"""Language model: train a small LM on text with known facts, then find its heads and read its lenses.

With no ``--model``, the study writes the generated corpus (stories and statements about
invented people, cities and objects; :mod:`interplab.lm.corpus`), trains a BPE tokenizer on it
and trains interplab's ``Transformer`` (LayerNorm, GELU, learned positions) on next-token
prediction with the one training loop. It then measures, on the trained model:

- the loss per token on held-out rows, and fact-recall accuracy per attribute
  (``"Mira Tolvane plays the sport of"`` -> ``" tennis"``, greedy, every answer token);
- previous-token, duplicate-token and induction heads (Olsson et al. 2022): induction scores
  on repeated random tokens ``[BOS, r, r]``, the others on corpus text;
- the logit lens (nostalgebraist 2020) on the fact prompts: the mean rank of the answer's
  first token after each layer;
- K-composition scores (Elhage et al. 2021) from previous-token heads into induction heads;
- an attention viewer on a story whose names repeat.

With ``--model NAME_OR_DIR`` the same analyses run on a pretrained model loaded by
``interplab.lm.load`` (its own tokenizer; the corpus is still generated, for text and facts
the model has never seen). A finished training run in ``out/run`` is reused; ``--quick``
trains a smaller model on a smaller corpus in about two CPU-minutes.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import matplotlib.pyplot as plt
import torch
import typer

from interplab.analysis.circuits import composition_scores
from interplab.analysis.heads import (attention_patterns, duplicate_token_scores, heads_above, induction_scores,
                                      previous_token_scores, repeated_tokens, text_induction_scores)
from interplab.analysis.lens import answer_ranks, logit_lens
from interplab.devices import Placement, dtype_name, model_device, model_dtype
from interplab.options import number
from interplab.errors import check
from interplab.lm.corpus import fact_prompts, load_corpus, make_corpus
from interplab.lm.facts import fact_accuracy, fact_batches
from interplab.lm.generate import complete
from interplab.lm.load import load_option, model_option
from interplab.lm.tokenizer import bos_id, encode, token_strings, vocab_size
from interplab.lm.tokens import TokenDataset, tokenize_corpus, write_token_file
from interplab.models import Transformer
from interplab.report import Report, announce
from interplab.io import read_json, write_results
from interplab.tasks.lm import LMTask, next_token_loss
from interplab.runs import state_path
from interplab.train import TrainConfig, train

INDUCTION_THRESHOLD = 0.3
PREV_THRESHOLD = 0.4


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run of the study (corpus, model, training)."""

    corpus_bytes: int = 12_000_000
    people: int = 100
    cities: int = 20
    countries: int = 6
    objects: int = 30
    visitor_frac: float = 0.3
    chant_frac: float = 0.15
    vocab_size: int = 768
    n_ctx: int = 128
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 512
    epochs: int = 400
    rows_per_epoch: int = 96
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.1
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        """The ``--quick`` preset: about two CPU-minutes in all."""
        return cls(corpus_bytes=2_500_000, people=24, cities=8, countries=4, objects=12, n_ctx=64, epochs=320,
                   rows_per_epoch=64, lr=3e-3)


def _corpus(out: Path, s: Settings, quiet: bool) -> Path:
    d = out / "corpus"
    want = {"n_bytes": s.corpus_bytes, "n_people": s.people, "n_cities": s.cities, "n_countries": s.countries,
            "n_objects": s.objects, "visitor_frac": s.visitor_frac, "chant_frac": s.chant_frac, "seed": s.seed}
    if (d / "entities.json").is_file() and (d / "tokens.bin").is_file():
        have = read_json(d / "entities.json").get("settings", {})
        if all(have.get(k) == v for k, v in want.items()) and TokenDataset(d / "tokens.bin", 2).vocab_size == s.vocab_size:
            return d
    make_corpus(d, n_bytes=s.corpus_bytes, n_people=s.people, n_cities=s.cities, n_countries=s.countries,
                n_objects=s.objects, visitor_frac=s.visitor_frac, chant_frac=s.chant_frac, seed=s.seed, quiet=quiet)
    tokenize_corpus(d, vocab_size=s.vocab_size, quiet=quiet)
    return d


def _train(out: Path, corpus: Path, s: Settings, quiet: bool,
           placement: Placement | None = None) -> tuple[Transformer, LMTask, list[dict[str, Any]]]:
    task = LMTask(corpus, n_ctx=s.n_ctx, seed=s.seed, rows_per_epoch=s.rows_per_epoch)
    model = Transformer(task.default_model_config(d_model=s.d_model, n_layers=s.n_layers, n_heads=s.n_heads,
                                                  d_mlp=s.d_mlp), seed=s.seed)
    if placement is not None:  # on the device and in the dtype asked for (train() records them in config.json)
        placement.apply(model)
    cfg = TrainConfig(epochs=s.epochs, lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.95),
                      batch_size=s.batch_size, schedule="cosine", warmup_epochs=max(1, s.epochs // 20), seed=s.seed,
                      log_every=max(1, s.epochs // 8), checkpoint_every=max(1, s.epochs // 8), keep_history=False)
    run_dir = out / "run"
    resume = state_path(run_dir).exists()
    if resume:
        stored = read_json(run_dir / "config.json")
        check(stored.get("task") == task.describe() and stored.get("train") == _jsonable_cfg(cfg)
              and stored.get("model", {}).get("cfg") == dataclasses.asdict(model.cfg),
              f"{run_dir} holds a training run with other settings; choose another --out.")
    rep = _repeated(task.tokenizer, min(20, (s.n_ctx - 1) // 2), s.seed, "cpu")

    def track(row: dict[str, Any]) -> None:  # induction score over training (the phase change)
        was = model.training
        row["max_induction_score"] = induction_scores(model, rep, (rep.shape[1] - 1) // 2).max().item()
        model.train(was)

    result = train(model, task, cfg, run_dir, resume=resume, quiet=quiet, on_log=track)
    return model, task, result.metrics


def _repeated(tokenizer: Any, length: int, seed: int, device: Any, n: int = 16) -> torch.Tensor:
    """``[BOS, r, r]`` with ``r`` random ordinary tokens (never BOS): ``[n, 2 * length + 1]``."""
    V, bos = vocab_size(tokenizer), bos_id(tokenizer)
    rep = repeated_tokens(n_values=V - 1, length=length, n=n, bos=bos, seed=seed)
    body = rep[:, 1:] + (rep[:, 1:] >= bos).long()  # skip the BOS id
    return torch.cat([rep[:, :1], body], 1).to(device)


def _jsonable_cfg(cfg: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(d["betas"])
    return d


@torch.no_grad()
def analyse(model: torch.nn.Module, tokenizer: Any, corpus: Path, eval_tokens: TokenDataset, seed: int = 0,
            n_rows: int = 32) -> dict[str, Any]:
    """Every measurement of the study on ``model`` (ours or a loaded one): see the module docstring."""
    model.eval()
    device = model_device(model)
    n_ctx = min(int(model.cfg.n_ctx), eval_tokens.n_ctx)
    rows = eval_tokens.rows(torch.arange(max(0, len(eval_tokens) - n_rows), len(eval_tokens)))[:, :n_ctx].to(device)
    loss = next_token_loss(model, rows).item()
    prompts = fact_prompts(load_corpus(corpus))
    acc = fact_accuracy(model, tokenizer, prompts)
    # heads: induction on repeated random tokens (ordinary vocabulary, BOS first), others on text
    length = min(20, (n_ctx - 1) // 2)
    rep = _repeated(tokenizer, length, seed, device)
    ind = induction_scores(model, rep, length).cpu()
    prev = previous_token_scores(model, rows[:16]).cpu()
    dup = duplicate_token_scores(model, rows[:16]).cpu()
    text_ind = text_induction_scores(model, rows[:16]).cpu()
    # logit lens on the fact prompts: rank of the answer's first token at the last prompt position
    ranks: list[torch.Tensor] = []
    for b in fact_batches(tokenizer, prompts, device):
        lens = logit_lens(model, b.tokens[:, :b.last + 1], positions=torch.full((len(b.index),), b.last))
        ranks.append(answer_ranks(lens, b.answers[:, 0]).float().cpu())
    rank = torch.cat(ranks, dim=1).mean(1)  # [n_layers + 1]
    layer_names = ["embed"] + [str(i) for i in range(model.cfg.n_layers)]
    kcomp = composition_scores(model, "k") if model.cfg.n_layers > 1 else None
    return {"loss": loss, "fact_accuracy": acc, "induction": ind, "prev": prev, "dup": dup, "text_induction": text_ind,
            "lens_rank": dict(zip(layer_names, rank.tolist())), "kcomp": kcomp, "rep_tokens": rep[:1].cpu()}


def _story(corpus: Path, tokenizer: Any, n_ctx: int) -> tuple[torch.Tensor, list[str]]:
    """The first story of the corpus (names repeat in it), as ``[1, pos]`` tokens with BOS."""
    docs = load_corpus(corpus).documents()
    text = next((d for d in docs if d.startswith("One day")), None)
    check(text is not None, "The corpus has no story to show.")
    ids = [bos_id(tokenizer), *encode(tokenizer, text)][:min(n_ctx, 48)]
    return torch.tensor([ids]), ["<bos>"] + token_strings(tokenizer, ids[1:])


def run(out_dir: str | Path, settings: Settings | None = None, quick: bool = False, model: str | None = None,
        device: str = "auto", dtype: str = "float32", quiet: bool = False) -> dict[str, Any]:
    """Make the corpus, train (or reuse, or load ``model``), analyse; write results.json and report.html.

    The model trains (or ``model`` is loaded) and is analysed on ``device`` in ``dtype`` (recorded in
    results.json); float16 is for a loaded ``model`` only.
    """
    t0 = time.perf_counter()
    s = settings if settings is not None else (Settings.quick() if quick else Settings())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is not None:  # load first: a model that cannot be loaded should not cost a corpus
        lm, tok = load_option(model, device=device, dtype=dtype)
    else:  # a device this machine lacks is refused before the corpus is made
        placement = Placement(device, dtype)
    corpus = _corpus(out, s, quiet)
    metrics: list[dict[str, Any]] = []
    if model is None:
        lm, task, metrics = _train(out, corpus, s, quiet, placement)
        tok, eval_tokens = task.tokenizer, TokenDataset(corpus / "tokens.bin", s.n_ctx + 1)
        name = "interplab Transformer trained here"
    else:
        docs = itertools.islice(load_corpus(corpus).documents(), 2000)  # enough for the held-out rows
        path = write_token_file(docs, tok, out / "model_tokens.bin", quiet=quiet)
        eval_tokens = TokenDataset(path, min(int(lm.cfg.n_ctx), 129))
        name = model
    t_train = time.perf_counter() - t0
    a = analyse(lm, tok, corpus, eval_tokens, seed=s.seed)
    results: dict[str, Any] = {
        "model": name,
        "loss_per_token": a["loss"],
        "fact_accuracy": a["fact_accuracy"],
        "fact_accuracy_mean": sum(a["fact_accuracy"].values()) / len(a["fact_accuracy"]),
        "induction_heads": sorted(set(heads_above(a["induction"], INDUCTION_THRESHOLD))
                                  | set(heads_above(a["text_induction"], INDUCTION_THRESHOLD))),
        "induction_heads_random_tokens": heads_above(a["induction"], INDUCTION_THRESHOLD),
        "induction_heads_text": heads_above(a["text_induction"], INDUCTION_THRESHOLD),
        "prev_token_heads": heads_above(a["prev"], PREV_THRESHOLD),
        "duplicate_token_heads": heads_above(a["dup"], PREV_THRESHOLD),
        "max_induction_score": a["induction"].max().item(),
        "max_text_induction_score": a["text_induction"].max().item(),
        "max_prev_token_score": a["prev"].max().item(),
        "logit_lens_answer_rank": a["lens_rank"],
        "n_layers": int(lm.cfg.n_layers),
        "n_heads": int(lm.cfg.n_heads),
        "train_seconds": round(metrics[-1]["time"] if metrics else t_train, 1),
    }
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    results.update(device=str(model_device(lm)), dtype=dtype_name(model_dtype(lm)))
    write_results(out, results)
    path = _report(results, a, metrics, lm, tok, corpus, s, model is None).save(out / "report.html")
    lines: list[str] = []
    accs = ", ".join(f"{k} {v:.2f}" for k, v in results["fact_accuracy"].items())
    lines.append(f"{name}: loss {results['loss_per_token']:.3f} nats/token; fact recall: {accs}")
    lines.append(f"induction heads {results['induction_heads']}, previous-token heads {results['prev_token_heads']}")
    lines.append("logit lens, mean answer rank by layer: "
               + ", ".join(f"{k} {v:.1f}" for k, v in results["logit_lens_answer_rank"].items()))
    lines.append(f"{results['wall_seconds']:.0f} s")
    announce(lines, path)
    return results


def _heat(ax: Any, scores: torch.Tensor, title: str) -> None:
    im = ax.imshow(scores.numpy(), vmin=0, vmax=1, cmap="Blues", aspect="auto")
    ax.set(xlabel="head", ylabel="layer", title=title, xticks=range(scores.shape[1]), yticks=range(scores.shape[0]))
    plt.colorbar(im, ax=ax)


def _report(results: dict[str, Any], a: dict[str, Any], metrics: list[dict[str, Any]], model: torch.nn.Module,
            tok: Any, corpus: Path, s: Settings, trained: bool) -> Report:
    r = Report("A small language model on text with known facts",
               subtitle=f"{results['model']}: loss, fact recall, attention heads, logit lens")
    r.numbers({"loss per token (nats)": results["loss_per_token"], "fact recall (mean)": results["fact_accuracy_mean"],
               "induction heads": len(results["induction_heads"]), "previous-token heads": len(results["prev_token_heads"]),
               "seconds": results["wall_seconds"]})
    c = load_corpus(corpus)
    r.section("Corpus and model")
    r.text(f"Generated corpus: {c.settings.get('n_documents')} documents (~{s.corpus_bytes / 1e6:.1f} MB) about "
           f"{len(c.people)} people, {len(c.cities)} cities in {len(c.countries)} countries and {len(c.objects)} "
           "objects; every fact is stated in one fixed sentence form and recurs in stories. Example document:")
    r.code(next(d for d in c.documents() if d.startswith("One day")))
    if trained:
        cfg = model.cfg
        r.text(f"Model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, d_mlp {cfg.d_mlp}, GELU, "
               f"LayerNorm, context {cfg.n_ctx}, vocabulary {cfg.d_vocab}; {s.epochs} epochs of {s.rows_per_epoch} "
               f"rows, AdamW lr {s.lr} (cosine), batch {s.batch_size}.")
        if metrics:
            fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
            ep = [m["epoch"] for m in metrics]
            ax[0].plot(ep, [m["train_loss"] for m in metrics], label="train")
            ax[0].plot(ep, [m.get("test_loss", float("nan")) for m in metrics], label="held out")
            ax[0].set(xlabel="epoch", ylabel="loss per token", title="Loss")
            ax[0].legend()
            for attr in results["fact_accuracy"]:
                ax[1].plot(ep, [m.get(f"fact_acc_{attr}", float("nan")) for m in metrics], label=attr)
            ax[1].set(xlabel="epoch", ylabel="accuracy", title="Fact recall", ylim=(-0.02, 1.02))
            ax[1].legend(fontsize=8)
            r.figure(fig, caption="Training curves (logged epochs).")
    r.section("Fact recall")
    r.table(["attribute", "accuracy"], [[k, v] for k, v in results["fact_accuracy"].items()],
            caption="Greedy completion of every fact prompt; a fact counts when every answer token is right.")
    rows = [("greedy", 0.0, 0), ("T = 0.8", 0.8, 1)]
    prompt = fact_prompts(c)[0].prompt
    r.text("Samples after <code>" + prompt + "</code> and after <code>One day,</code>:")
    r.code("\n".join(f"[{label}] {p}{complete(model, tok, p, 24, temp, None, seed)}"
                     for p in (prompt, "One day,") for label, temp, seed in rows))
    r.section("Attention heads")
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.2))
    _heat(axes[0], a["prev"], "previous-token (text)")
    _heat(axes[1], a["dup"], "duplicate-token (text)")
    _heat(axes[2], a["text_induction"], "induction (text)")
    _heat(axes[3], a["induction"], "induction (repeated random)")
    r.figure(fig, caption="Mean attention on the defining offset of each head type.")
    r.text(f"Induction heads (score above {INDUCTION_THRESHOLD} on corpus text or on repeated random tokens): "
           f"<b>{', '.join(results['induction_heads']) or 'none'}</b> (text: "
           f"{', '.join(results['induction_heads_text']) or 'none'}; random tokens: "
           f"{', '.join(results['induction_heads_random_tokens']) or 'none'}); previous-token heads (above "
           f"{PREV_THRESHOLD}): <b>{', '.join(results['prev_token_heads']) or 'none'}</b>. On text, a head's "
           "induction score is its attention from a token to the tokens that followed earlier copies of it; on "
           "<code>[BOS, r, r]</code> with random tokens from the whole vocabulary, to the token after the first copy. "
           "A head can copy names and chants in the corpus without doing so on random tokens it has rarely seen.")
    if a["kcomp"] is not None and results["induction_heads"] and results["prev_token_heads"]:
        rows_k = [[p, i, a["kcomp"][int(p.split('.')[0]), int(p.split('.')[1]), int(i.split('.')[0]),
                                    int(i.split('.')[1])].item()]
                  for p in results["prev_token_heads"] for i in results["induction_heads"]
                  if int(i.split('.')[0]) > int(p.split('.')[0])]
        if rows_k:
            r.table(["previous-token head", "induction head", "K-composition"], rows_k,
                    caption="How much each induction head's keys read what each earlier previous-token head writes.")
    tokens, labels = _story(corpus, tok, int(model.cfg.n_ctx))
    pats = attention_patterns(model, tokens.to(model_device(model)))[0].cpu()  # [layer, head, q, k]
    L, H = pats.shape[:2]
    r.attention(labels, pats.flatten(0, 1), [f"L{l}H{h}" for l in range(L) for h in range(H)],
                caption="Attention patterns on a story (queries down, keys across; choose a head). Repeated names "
                        "show previous-token and induction heads at work.")
    r.section("Logit lens on the fact prompts")
    lr_ = results["logit_lens_answer_rank"]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(list(lr_), list(lr_.values()), marker="o")
    ax.set(xlabel="after layer", ylabel="mean rank of the answer", yscale="symlog", title="Logit lens")
    r.figure(fig, caption="Final LayerNorm and unembedding applied to the residual stream after each layer, at "
                          "the last prompt token; rank 0 = the answer's first token is the most likely.")
    r.table(["layer", "mean answer rank"], [[k, v] for k, v in lr_.items()])
    return r


def cli(
    out: Path = typer.Option(..., "--out", help="Study directory (corpus/, run/, results.json, report.html)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller corpus and model: about two CPU-minutes."),
    model: Optional[str] = model_option(help="Analyse this pretrained causal LM (a local Hugging Face directory, "
                                        "or a hub name) instead of training one."),
    device: str = typer.Option("auto", help="Device of the model: auto (CUDA when present, else CPU), cpu, cuda or mps."),
    dtype: str = typer.Option("float32", help="Dtype of the model: float32, float64 or bfloat16 (float16: --model only)."),
    seed: int = number(0, "--seed", kind=int, ge=0, help="Seed of the corpus, initialisation and training."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Small LM on a corpus with known facts: fact recall, induction and previous-token heads, logit lens."""
    s = Settings.quick() if quick else Settings()
    run(out, settings=dataclasses.replace(s, seed=seed), model=model, device=device, dtype=dtype, quiet=quiet)
