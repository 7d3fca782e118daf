"""Activation store throughput (rows/s from tokens to a shuffled batch) against a plain reference.

    python bench/activation_store.py [--rows 200000] [--d-model 256] [--layers 4] [--threads 1]

On one randomly initialised interplab ``Transformer`` and one set of token rows:

- reference: the straightforward way: ``run_with_cache`` on every sequence (batches of
  ``--model-batch``), keep the site's rows (BOS excluded), stack them, draw a random
  permutation and cut it into batches;
- ours, in memory: :meth:`interplab.sae.store.ActivationStore.from_model` (buffer of
  ``--buffer`` rows, half refilled and reshuffled at a time) handing out the same number of
  rows in batches of ``--batch``;
- ours, from disk: :func:`interplab.sae.store.write_shards` once (timed apart), then
  :meth:`ActivationStore.from_shards` handing out the same number of rows.

The site is the middle layer's residual stream (``blocks.{layers//2}.hook_resid_pre``); the
store stops each forward pass there (``instrument.cache(..., stop=True)``), the reference runs
the whole model, as ``run_with_cache`` does.
Printed: rows/s of each and the ratios ours / reference and disk / in-memory.
"""

import argparse
import tempfile
import time

import torch

from interplab.models import Transformer, TransformerConfig
from interplab.sae.store import ActivationStore, run_site, write_shards


@torch.no_grad()
def reference(model, hook, tokens, model_batch, batch, g):
    acts = [model.run_with_cache(chunk, names_filter=hook)[1][hook][:, 1:] for chunk in tokens.split(model_batch)]
    rows = torch.cat([a.reshape(-1, a.shape[-1]) for a in acts])
    perm = torch.randperm(len(rows), generator=g)
    n = 0
    for i in range(0, len(rows) - batch + 1, batch):
        n += len(rows[perm[i : i + batch]])
    return n


def consume(store, n_rows, batch):
    n = 0
    while n + batch <= n_rows:
        n += len(store.next(batch))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--n-ctx", type=int, default=128)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--model-batch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--buffer", type=int, default=65536)
    ap.add_argument("--shard-rows", type=int, default=32768)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = Transformer(TransformerConfig(d_vocab=1024, n_ctx=a.n_ctx, d_model=a.d_model, n_heads=a.d_model // 64,
                                          d_mlp=4 * a.d_model, n_layers=a.layers), seed=0)
    model.eval()
    hook = f"blocks.{a.layers // 2}.hook_resid_pre"
    n_seq = a.rows // (a.n_ctx - 1)
    tokens = torch.randint(1, 1024, (n_seq, a.n_ctx), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0
    n_rows = n_seq * (a.n_ctx - 1)
    run_site(model, hook, tokens[:2])  # warm-up

    t = time.perf_counter()
    n_ref = reference(model, hook, tokens, a.model_batch, a.batch, torch.Generator().manual_seed(0))
    t_ref = time.perf_counter() - t

    t = time.perf_counter()
    store = ActivationStore.from_model(model, hook, tokens, torch.Generator().manual_seed(0), size=a.buffer,
                                       model_batch=a.model_batch)
    n_mem = consume(store, n_rows, a.batch)
    t_mem = time.perf_counter() - t

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        write_shards(model, hook, tokens, d, model_batch=a.model_batch, shard_rows=a.shard_rows, quiet=True)
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        disk = ActivationStore.from_shards(d, torch.Generator().manual_seed(0), size=a.buffer)
        n_disk = consume(disk, n_rows, a.batch)
        t_disk = time.perf_counter() - t
        peak = disk.peak_rows

    r_ref, r_mem, r_disk = n_ref / t_ref, n_mem / t_mem, n_disk / t_disk
    print(f"{n_seq} sequences of {a.n_ctx} tokens, {n_rows} rows of width {a.d_model} at {hook} "
          f"({a.layers}-layer model), batches of {a.batch}, buffer {a.buffer}, {a.threads} thread(s)")
    print(f"reference (run all, stack, permute): {r_ref:12.0f} rows/s")
    print(f"ActivationStore, in memory:          {r_mem:12.0f} rows/s   ratio to reference {r_mem / r_ref:.2f}")
    print(f"ActivationStore, from disk shards:   {r_disk:12.0f} rows/s   ratio to in-memory {r_disk / r_mem:.2f} "
          f"(peak {peak} rows held; writing the shards once: {n_rows / t_write:.0f} rows/s)")


if __name__ == "__main__":
    main()
