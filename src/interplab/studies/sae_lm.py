"""SAEs on a language model: variants, loss recovered, attribute detectors, steering, auto-interp.

Reproduces, on the small LM trained on the generated corpus (or any model given with
``--model``), the dictionary-learning measurements of the GDM mech-interp progress update and
of the open replications of Anthropic's "Towards Monosemanticity":

- the middle layer's residual stream (``blocks.{L//2}.hook_resid_pre``) is written once to
  safetensors shards (:func:`interplab.sae.store.write_shards`, BOS excluded, normalised so
  ``E||x|| = sqrt(d)``) and SAEs train from them with three dead-feature recipes (plain,
  resampling, ghost grads ``dead-only`` on every feature for the first tenth of training) over
  an L1 sweep: the Pareto front of L0 against loss
  recovered (next-token loss with the reconstruction spliced in, against zero ablation);
- for each known attribute of the corpus (sport, team, home city, country, colour), the best
  single feature's ROC AUC as a detector of the tokens that state that attribute;
- inference-time optimisation of the main SAE's dictionary against a random one (MP, OMP, GP);
- steering stories towards a sport: the mean-difference vector where the model predicts a
  sport (the last position of ``"<person> plays the sport of"``, players of the target against
  the rest) against its SAE views (sparse feature decomposition, single feature, reconstruction
  difference, irrelevant features taken out), each scaled to the original's norm; P(a story
  sampled after ``"One day,"`` mentions the sport) against the steered loss on ordinary text,
  with Pareto frontiers, and as references the unsteered rate (coefficient 0) and the rate when
  the prompt names a player of that sport;
- auto-interp scores of the most active features with the offline rule explainer over the
  corpus's token categories, entities' attributes and token identities;
- LM feature dashboards of the best attribute detectors.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import matplotlib.pyplot as plt
import torch
import typer

from interplab.devices import Placement, model_device, to_host
from interplab.options import number
from interplab.errors import check
from interplab.instrument import cache
from interplab.interventions.steering import (coefficient_sweep, pareto_front, pareto_plot, sae_views,
                                              sample_continuations)
from interplab.lm.corpus import SPORTS, annotated_documents, fact_prompts, load_corpus
from interplab.lm.load import model_option
from interplab.lm.tokenizer import bos_id, decode, encode, token_strings
from interplab.lm.tokens import TokenDataset, write_token_file
from interplab.report import Report, announce
from interplab.io import read_json, write_results
from interplab.sae.autointerp import RuleBackend, autointerp
from interplab.sae.dashboard import feature_activations, write_lm_dashboards
from interplab.sae.ito import ito_loss_recovered
from interplab.sae.metrics import feature_auc, lm_loss_recovered
from interplab.sae.model import SAE, SAEConfig
from interplab.sae.store import ActivationStore, write_shards
from interplab.sae.train import SAETrainConfig, train_sae
from interplab.studies import lm as lm_study

VARIANTS = {"plain": "none", "resample": "resample", "ghost": "ghost-dead-only"}


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run of the study (the LM's settings come from the ``lm`` study)."""

    lm: lm_study.Settings = lm_study.Settings()
    expansion: int = 8
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    l1_coeffs: tuple[float, ...] = (0.5, 1.0, 3.0)
    main_l1: float = 1.0
    store_rows: int = 400_000
    shard_rows: int = 65536
    buffer_size: int = 32768
    eval_rows: int = 400
    ito_ks: tuple[int, ...] = (4, 16, 32)
    steer_coefs: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    steer_samples: int = 32
    steer_tokens: int = 24
    steer_k: int = 8
    autointerp_features: int = 40
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        """The ``--quick`` preset: a few CPU-minutes in all."""
        return cls(lm=lm_study.Settings.quick(), expansion=4, steps=500, l1_coeffs=(1.0, 4.0), main_l1=1.0, store_rows=60_000,
                   shard_rows=16384, buffer_size=8192, eval_rows=120, ito_ks=(4, 16), steer_coefs=(0.0, 0.25, 0.5, 1.0, 2.0),
                   steer_samples=16, steer_tokens=20, autointerp_features=12)


def _token_labels(doc: Any, tok: Any) -> list[set[str]]:
    strs = token_strings(tok, doc.ids)
    return [{f"category={c}", f"token={s}"} | ({f"attribute={a}"} if a else set())
            for c, a, s in zip(doc.categories, doc.attributes, strs)]


def _eval_set(corpus: Path, tok: Any, n_rows: int, n_ctx: int) -> tuple[torch.Tensor, list[list[str]],
                                                                         list[list[set[str]]], list[list[str | None]]]:
    """Annotated documents as ``[n, n_ctx]`` token rows cut like a :class:`TokenDataset`: the
    documents, each after a BOS, as one stream; every row ``[BOS] + n_ctx - 1`` stream tokens."""
    bos, bos_str = bos_id(tok), "<bos>"
    ids: list[int] = []
    strs: list[str] = []
    labels: list[set[str]] = []
    attrs: list[str | None] = []
    need = n_rows * (n_ctx - 1)
    for doc in annotated_documents(load_corpus(corpus), tok):
        ids += [bos, *doc.ids]
        strs += [bos_str, *token_strings(tok, doc.ids)]
        labels += [set(), *_token_labels(doc, tok)]
        attrs += [None, *doc.attributes]
        if len(ids) >= need:
            break
    n = min(n_rows, len(ids) // (n_ctx - 1))
    check(n >= 4, f"The corpus is too small for {n_ctx}-token evaluation rows.")
    L = n_ctx - 1
    rows = torch.tensor([[bos, *ids[i * L:(i + 1) * L]] for i in range(n)])
    return (rows, [[bos_str, *strs[i * L:(i + 1) * L]] for i in range(n)],
            [[set(), *labels[i * L:(i + 1) * L]] for i in range(n)], [[None, *attrs[i * L:(i + 1) * L]] for i in range(n)])


def _steering(lm: torch.nn.Module, tok: Any, sae: SAE, text: torch.Tensor, corpus: Path, s: Settings, quiet: bool
              ) -> dict[str, Any]:
    """Steer stories towards one sport: the vector and its SAE views over coefficients, plus references.

    The vector is read where the model *predicts* a sport: the last position of the fact prompts
    ``"<person> plays the sport of"``, people who play the target against everyone else (mean
    difference). Read at the sport word itself it would say which token is there, not what comes
    next, and adding it makes the model write *after* the sport rather than the sport (tried: P(success)
    falls with the coefficient). Every view is scaled to the original's norm, so the coefficient is in
    units of that norm (``steering_vector_norm``; ``steering_resid_norm`` is the site's mean row norm).
    """
    facts = fact_prompts(load_corpus(corpus), ("sport",))
    plays = Counter(p.answer.strip() for p in facts)
    check(len(plays) >= 2, "Steering needs people who play at least two different sports in the corpus.")
    target = SPORTS[0] if plays[SPORTS[0]] else plays.most_common(1)[0][0]
    device = model_device(lm)
    bos = bos_id(tok)

    def ids(words: str) -> torch.Tensor:
        return torch.tensor([bos, *encode(tok, words)], device=device)

    positive = [ids(p.prompt) for p in facts if p.answer.strip() == target]
    negative = [ids(p.prompt) for p in facts if p.answer.strip() != target]
    views = sae_views(sae, lm, positive, negative, k=s.steer_k, positions=-1)
    norm = views["original"][-1].norm()
    vectors = {name: views[name][-1] * (norm / views[name][-1].norm().clamp_min(1e-12))
               for name in ("original", "features", "single", "recon_diff", "projected")}
    word = re.compile(rf"\b{re.escape(target)}\b")

    def mentions(cont: torch.Tensor) -> bool:
        return word.search(decode(tok, cont.tolist())) is not None

    prompt = ids("One day,")
    sweep = coefficient_sweep(lm, sae.cfg.hook_name, vectors, s.steer_coefs, prompt, mentions, text[:16].to(device),
                              n_samples=s.steer_samples, max_new_tokens=s.steer_tokens, seed=s.seed, quiet=quiet)
    # reference: no vector, but a person who plays the target named in the prompt (can the LM write it at all?)
    player = next(p.entity for p in facts if p.answer.strip() == target)
    named = sample_continuations(lm, ids(f"One day, {player}"), s.steer_samples, s.steer_tokens, seed=s.seed)
    resid = cache(lm, text[:16].to(device), names=sae.cfg.hook_name)[1][sae.cfg.hook_name][:, 1:]
    return {"steering": sweep, "steering_target": target, "steering_prompted": sum(map(mentions, named)) / len(named),
            "steering_vector_norm": float(norm), "steering_resid_norm": float(resid.norm(dim=-1).mean()),
            "steering_prompts": [len(positive), len(negative)]}


def run(out_dir: str | Path, settings: Settings | None = None, quick: bool = False, model: str | None = None,
        device: str = "auto", quiet: bool = False, dtype: str = "float32") -> dict[str, Any]:
    """Train or load the LM, run every measurement; write results.json and report.html.

    The LM (trained or loaded), its activation shards' SAEs and every measurement run on ``device`` in
    ``dtype`` (recorded in results.json).
    """
    t0 = time.perf_counter()
    placement = Placement(device, dtype)
    s = settings if settings is not None else (Settings.quick() if quick else Settings())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = lm_study._corpus(out / "lm", s.lm, quiet)
    if model is None:
        lm, task, _ = lm_study._train(out / "lm", corpus, s.lm, quiet, placement)
        tok, tokens = task.tokenizer, TokenDataset(corpus / "tokens.bin", s.lm.n_ctx)
        name = "interplab Transformer trained here"
    else:
        from interplab.lm.load import load

        loaded = load(model, device=placement.torch_device, dtype=placement.torch_dtype)
        lm, tok = loaded.model, loaded.tokenizer
        path = write_token_file(load_corpus(corpus).documents(), tok, out / "model_tokens.bin", quiet=quiet)
        tokens = TokenDataset(path, min(int(lm.cfg.n_ctx), s.lm.n_ctx + 1))
        name = model
    lm.eval()
    for p in lm.parameters():
        p.requires_grad_(False)
    t_lm = time.perf_counter() - t0
    n_ctx = tokens.n_ctx
    hook = f"blocks.{int(lm.cfg.n_layers) // 2}.hook_resid_pre"
    n_seq = min(len(tokens) - 8, max(8, s.store_rows // (n_ctx - 1)))
    train_rows = tokens.rows(torch.arange(n_seq))
    text = tokens.rows(torch.arange(len(tokens) - 8, len(tokens)))  # held-out rows for spliced losses
    shards = write_shards(lm, hook, train_rows, out / "acts", shard_rows=s.shard_rows, seed=s.seed, quiet=quiet)
    d = int(ActivationStore.from_shards(shards, size=2).source.meta["d"])
    eval_tokens, eval_strs, eval_labels, eval_attrs = _eval_set(corpus, tok, s.eval_rows, n_ctx)

    # 1. SAEs: variants x L1 sweep, from the shards; Pareto of L0 against loss recovered
    saes: dict[tuple[str, float], SAE] = {}
    pareto: dict[str, list[list[float]]] = {}
    for variant, fix in VARIANTS.items():
        for l1 in s.l1_coeffs:
            store = ActivationStore.from_shards(shards, torch.Generator(), size=s.buffer_size)
            cfg = SAETrainConfig(steps=s.steps, batch_size=s.batch_size, lr=s.lr, l1_coeff=l1, buffer_size=s.buffer_size,
                                 l1_warmup_steps=s.steps // 10, dead_fix=fix, dead_window=max(50, s.steps // 10),
                                 resample_every=max(100, s.steps // 4), seed=s.seed, log_every=max(1, s.steps // 5),
                                 ghost_all_steps=s.steps // 10 if variant == "ghost" else 0,
                                 checkpoint_every=s.steps)
            sae = placement.apply(SAE(SAEConfig(d_in=d, d_sae=s.expansion * d, hook_name=hook, act_scale=store.scale),
                                      seed=s.seed))
            run_dir = out / "saes" / f"{variant}_l1_{l1:g}"
            resume = (run_dir / "checkpoints" / "state.pt").exists()
            if resume:  # reuse only a run of these very settings (same LM and activations: same act_scale)
                stored = read_json(run_dir / "train_config.json")
                same = (stored.get("train") == json.loads(json.dumps(dataclasses.asdict(cfg)))
                        and stored.get("sae") == json.loads(json.dumps(dataclasses.asdict(sae.cfg))))
                check(same, f"{run_dir} holds an SAE trained with other settings or activations; choose another --out.")
            train_sae(sae, store, cfg, run_dir, resume=resume, quiet=quiet, model_name=name)
            r = lm_loss_recovered(lm, text, sae)
            acts = feature_activations(sae, lm, eval_tokens, exclude_bos=True)[:, 1:].reshape(-1, sae.cfg.d_sae)
            l0 = (acts > 0).float().sum(-1).mean().item()
            pareto.setdefault(variant, []).append([l1, l0, r["recovered_zero"], r["sae"]])
            saes[(variant, l1)] = sae
    main = saes[("ghost", s.main_l1)]
    main_lr = lm_loss_recovered(lm, text, main)
    acts = to_host(feature_activations(main, lm, eval_tokens, exclude_bos=True))  # [N, T, d_sae], on the host
    flat = acts[:, 1:].reshape(-1, main.cfg.d_sae)
    l0 = (flat > 0).float().sum(-1).mean().item()

    # 2. attribute detectors
    attrs = [a for row in eval_attrs for a in row[1:]]
    attribute_auc, best_feature = {}, {}
    for attribute in sorted({a for a in attrs if a}):
        labels = torch.tensor([a == attribute for a in attrs])
        if 0 < int(labels.sum()) < len(labels):
            auc = feature_auc(flat, labels)
            attribute_auc[attribute], best_feature[attribute] = auc.max().item(), int(auc.argmax())

    # 3. ITO against a random dictionary
    ito = ito_loss_recovered(lm, text, main, list(s.ito_ks), seed=s.seed, quiet=quiet)

    # 4. steering
    steer = _steering(lm, tok, main, text, corpus, s, quiet)
    steering, target = steer["steering"], steer["steering_target"]

    # 5. auto-interp with the offline rule explainer, most frequently active features
    density = (flat > 0).float().mean(0)
    chosen = [int(i) for i in density.argsort(descending=True)[: s.autointerp_features] if density[i] > 0]
    interp = {i: autointerp(RuleBackend(min_count=2), acts[..., i], eval_strs, eval_labels, seed=s.seed)
              for i in chosen}
    scores = [v["score"] for v in interp.values()]

    # 6. dashboards of the best attribute detectors
    dash_features = sorted(set(best_feature.values()))
    index = write_lm_dashboards(main, lm, eval_tokens[:64], dash_features, out / "dashboards",
                                token_str=lambda t: token_strings(tok, [t])[0])

    results: dict[str, Any] = {
        "model": name, "hook_name": hook, "d_in": d, "d_sae": main.cfg.d_sae, "act_scale": main.cfg.act_scale,
        "pareto": pareto, "loss_recovered": main_lr["recovered_zero"], "loss_recovered_mean": main_lr["recovered_mean"],
        "ce_clean": main_lr["clean"], "ce_sae": main_lr["sae"], "ce_zero": main_lr["zero"], "l0": l0,
        "dead_fraction": float((density == 0).float().mean()),
        "attribute_feature_auc": attribute_auc, "attribute_best_feature": best_feature,
        "attributes_auc_above_0_9": sum(v >= 0.9 for v in attribute_auc.values()) / max(1, len(attribute_auc)),
        "ito": ito, **steer,
        "autointerp_score_mean": sum(scores) / len(scores) if scores else float("nan"),
        "autointerp": {str(i): v for i, v in interp.items()},
        "lm_seconds": round(t_lm, 1),
    }
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    results.update(placement.record())
    write_results(out, results)
    path = _report(results, index).save(out / "report.html")
    lines: list[str] = []
    lines.append(f"{name}, SAE on {hook} ({d} -> {main.cfg.d_sae}): L0 {l0:.1f}, loss recovered "
               f"{results['loss_recovered']:.3f} (zero ablation), {results['loss_recovered_mean']:.3f} (mean)")
    lines.append("best feature ROC AUC per attribute: " + ", ".join(f"{k} {v:.3f}" for k, v in attribute_auc.items()))
    first, last = steering["original"][0], steering["original"][-1]
    lines.append(f"steering towards {target!r}, P(success) at coefficient {first[0]:g}: {first[1]:.2f}; at {last[0]:g}: " + ", ".join(f"{m} {rows[-1][1]:.2f}" for m, rows in steering.items())
                 + f" (prompt naming a player: {results['steering_prompted']:.2f})")
    lines.append(f"auto-interp (rules) mean score {results['autointerp_score_mean']:.3f} over {len(scores)} features")
    lines.append(f"{results['wall_seconds']:.0f} s")
    announce(lines, path)
    return results


def _report(results: dict[str, Any], dashboards: Path) -> Report:
    r = Report("Sparse autoencoders on a language model",
               subtitle=f"{results['model']}, residual stream at {results['hook_name']}")
    r.numbers({"loss recovered (zero abl.)": results["loss_recovered"], "loss recovered (mean abl.)":
               results["loss_recovered_mean"], "L0": results["l0"], "dead fraction": results["dead_fraction"],
               "auto-interp score": results["autointerp_score_mean"], "seconds": results["wall_seconds"]})
    r.section("L0 against loss recovered")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, rows in results["pareto"].items():
        ax.plot([row[1] for row in rows], [row[2] for row in rows], "-o", label=name)
    ax.set(xlabel="L0 (active features per token)", ylabel="loss recovered (zero ablation)", xscale="log")
    ax.legend(fontsize=8)
    r.figure(fig, caption="One point per L1 coefficient; SAEs trained from disk shards of the residual stream.")
    r.table(["variant", "L1", "L0", "loss recovered", "CE spliced"], [[n, *row] for n, rows in results["pareto"].items()
                                                                   for row in rows])
    r.section("Attribute detectors")
    r.table(["attribute", "best feature", "ROC AUC"], [[a, results["attribute_best_feature"][a], v]
                                                      for a, v in results["attribute_feature_auc"].items()],
            caption="For the tokens that state each attribute in the corpus, the single SAE feature whose activation "
                    "separates them best from every other token.")
    r.text(f"Dashboards of these features: <a href='{dashboards.parent.name}/{dashboards.name}'>"
           f"{dashboards.parent.name}/{dashboards.name}</a>.")
    r.section("Inference-time optimisation")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for dname, methods in results["ito"].items():
        for m, rows in methods.items():
            ax.plot([row[0] for row in rows], [row[1] for row in rows], "-o" if dname == "sae" else "--x",
                    label=f"{dname} {m}")
    ax.set(xlabel="target L0", ylabel="loss recovered (zero ablation)")
    ax.legend(fontsize=7)
    r.figure(fig, caption="The main SAE's decoder read out by matching pursuit, OMP and gradient pursuit, against a "
                          "random dictionary of the same shape.")
    r.section(f"Steering towards {results['steering_target']!r}")
    r.figure(pareto_plot(results["steering"], results["ce_clean"]),
             caption="Each point a coefficient; lines are each method's Pareto frontier (higher P(success) at lower "
                     "loss is better). The dotted line is the unsteered loss.")
    r.table(["method", "coefficient", "P(success)", "steered loss"],
            [[m, *row] for m, rows in results["steering"].items() for row in rows])
    r.text(f"The vector is the mean difference of the residual stream at the last token of "
           f"\"&lt;person&gt; plays the sport of\" between the {results['steering_prompts'][0]} people who play "
           f"{results['steering_target']} and the {results['steering_prompts'][1]} who do not; its norm is "
           f"{results['steering_vector_norm']:.2f} against a mean residual norm of {results['steering_resid_norm']:.2f} "
           f"at this site, and the coefficient is in units of that norm (every view is scaled to it). At coefficient "
           f"{results['steering']['original'][0][0]:g}, {results['steering']['original'][0][1]:.2f} of the stories "
           f"sampled after \"One day,\" mention the sport; with no vector but a player of it named in the prompt, "
           f"{results['steering_prompted']:.2f}.")
    r.text("Frontier points per method: " + "; ".join(
        f"{m}: {len(pareto_front(rows))}" for m, rows in results["steering"].items()))
    r.section("Auto-interp (offline rule explainer)")
    r.table(["feature", "explanation", "score"], [[i, v["explanation"], v["score"]]
                                                 for i, v in results["autointerp"].items()],
            caption="Explanations are the token label (category, stated attribute or token) whose indicator best "
                    "matches the feature on half of the documents; scores are correlations on the other half.")
    return r


def cli(
    out: Path = typer.Option(..., "--out", help="Study directory (lm/, acts/, saes/, dashboards/, results.json, report.html)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller LM, fewer and shorter SAE runs: a few CPU-minutes."),
    model: Optional[str] = model_option(),
    device: str = typer.Option("auto", help="Device of the LM and the SAEs: auto (CUDA when present, else CPU), cpu, "
                               "cuda or mps."),
    dtype: str = typer.Option("float32", help="Dtype of the LM and the SAEs: float32, float64 or bfloat16."),
    seed: int = number(0, "--seed", kind=int, ge=0, help="Seed of the corpus, LM and SAEs."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """SAEs on a language model: variants, loss recovered, attribute detectors, steering, auto-interp."""
    s = Settings.quick() if quick else Settings()
    run(out, settings=dataclasses.replace(s, seed=seed, lm=dataclasses.replace(s.lm, seed=seed)), model=model,
        device=device, dtype=dtype, quiet=quiet)
