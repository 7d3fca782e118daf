"""interplab's cache and patching on a TransformerBridge model against the bridge's own run_with_cache.

A random GPT-2-shaped checkpoint (``--layers``, ``--d-model``, vocabulary 1000) is written with
``transformers`` to a temporary directory and loaded by :func:`interplab.lm.load` (compatibility
mode). Timed in interleaved rounds on the same batch of tokens, best of ``--repeats`` per round:

- ``cache(model, x, names=...)`` against ``model.run_with_cache(x, names_filter=...)`` for a few
  sites (resid_pre, z and mlp_out of every layer) and for every site;
- one run of activation patching (a masked write into one z head, the per-component forward pass
  of :func:`~interplab.interventions.patching.activation_patching`) against ``run_with_cache`` on
  the few sites.

The target is a ratio of at most 1.2 for each. The outputs are checked to be the same numbers.

Run: ``python bench/bridge_overhead.py [--layers 4] [--d-model 256] [--batch 8] [--seq 64] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from interplab import lm
from interplab.instrument import cache, run_with_patches


def make_checkpoint(path: Path, layers: int, d_model: int) -> None:
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["a small bench corpus of words"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=1000, n_positions=256, n_embd=d_model, n_layer=layers,
                                             n_head=max(1, d_model // 64), bos_token_id=0, eos_token_id=0))
    model.save_pretrained(path)
    fast.save_pretrained(path)


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(Path(tmp), args.layers, args.d_model)
        model, _ = lm.load(tmp, device="cpu")
    x = torch.randint(0, 1000, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    few = [f"blocks.{l}.{s}" for l in range(args.layers) for s in ("hook_resid_pre", "attn.hook_z", "hook_mlp_out")]
    wanted = set(few)
    # same numbers first
    with torch.no_grad():
        out_a, acts_a = cache(model, x, names=few)
        out_b, acts_b = model.run_with_cache(x, names_filter=lambda n: n in wanted)
    assert torch.equal(out_a, out_b) and all(torch.equal(acts_a[n], acts_b[n]) for n in few)
    value, mask = acts_a["blocks.1.attn.hook_z"], torch.zeros(acts_a["blocks.1.attn.hook_z"].shape[1:], dtype=torch.bool)
    mask[:, 0] = True

    runs = {
        "bridge run_with_cache (few sites)": lambda: model.run_with_cache(x, names_filter=lambda n: n in wanted),
        "interplab cache (few sites)": lambda: cache(model, x, names=few),
        "bridge run_with_cache (all sites)": lambda: model.run_with_cache(x),
        "interplab cache (all sites)": lambda: cache(model, x),
        "interplab patching run (one z head)": lambda: run_with_patches(
            model, x, patches={"blocks.1.attn.hook_z": (value, mask)}),
    }
    totals = dict.fromkeys(runs, 0.0)
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in runs.items():
                totals[name] += best(fn, args.repeats)
    for name, t in totals.items():
        print(f"{name:40s} {1000 * t / args.rounds:8.2f} ms")
    few_ratio = totals["interplab cache (few sites)"] / totals["bridge run_with_cache (few sites)"]
    all_ratio = totals["interplab cache (all sites)"] / totals["bridge run_with_cache (all sites)"]
    patch_ratio = totals["interplab patching run (one z head)"] / totals["bridge run_with_cache (few sites)"]
    print(f"ratio cache/run_with_cache, few sites: {few_ratio:.2f}x (target <= 1.2)")
    print(f"ratio cache/run_with_cache, all sites: {all_ratio:.2f}x (target <= 1.2)")
    print(f"ratio patching run/run_with_cache:     {patch_ratio:.2f}x (target <= 1.2)")


if __name__ == "__main__":
    main()
