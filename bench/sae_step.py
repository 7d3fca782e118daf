"""Our SAE training step against a plain reference of the same math, and the FLOP/s it achieves.

    python bench/sae_step.py [--batch 256] [--d-in 512] [--d-sae 2048] [--steps 20] [--threads 1]

Our step is :func:`interplab.sae.train.sae_step` (the body of ``train_sae``: loss, backward,
decoder-gradient projection, Adam, renormalization) with the optimizer ``train_sae`` uses
(:func:`interplab.sae.train.sae_optimizer`, fused Adam). Its encoder's backward skips the input
gradient that autograd would form only to sum it for ``b_dec`` (5 matmuls a step instead of 6). The reference is the same math written
with bare tensors and a hand-written Adam, no modules or hooks. Both start from the same
weights and see the same batches; after the timed steps their weights are compared (a
correctness check). The step's matmul work is ``12 * batch * d_in * d_sae`` FLOPs (forward:
encoder and decoder, 2 each; backward: twice that); dividing by the step time and by the
dense matmul FLOP/s measured on this machine in the same run gives the achieved fraction.
"""

import argparse
import time

import torch

from interplab.sae.model import SAE, SAEConfig
from interplab.sae.train import sae_optimizer, sae_step


def reference_step(p: dict, state: dict, x: torch.Tensor, l1: float, lr: float, betas: tuple, eps: float = 1e-8) -> None:
    """Plain tensors: the SAE loss, backward, projection, Adam, renormalization."""
    W_enc, b_enc, W_dec, b_dec = p["W_enc"], p["b_enc"], p["W_dec"], p["b_dec"]
    f = torch.relu((x - b_dec) @ W_enc + b_enc)
    x_hat = f @ W_dec + b_dec
    loss = (x_hat - x).pow(2).sum(-1).mean() + l1 * f.sum(-1).mean()
    for t in p.values():
        t.grad = None
    loss.backward()
    with torch.no_grad():
        W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec  # rows are unit norm
        state["t"] += 1
        b1, b2 = betas
        for name, t in p.items():
            m, v = state["m"][name], state["v"][name]
            m.mul_(b1).add_(t.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(t.grad, t.grad, value=1 - b2)
            m_hat = m / (1 - b1 ** state["t"])
            v_hat = v / (1 - b2 ** state["t"])
            t -= lr * m_hat / (v_hat.sqrt() + eps)
        W_dec /= W_dec.norm(dim=1, keepdim=True)


def matmul_flops(n: int, repeat: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lr, betas, l1 = 1e-3, (0.0, 0.999), 1e-3
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(a.batch, a.d_in, generator=g).relu() for _ in range(a.steps + 2)]

    sae = SAE(SAEConfig(d_in=a.d_in, d_sae=a.d_sae), seed=0)
    opt = sae_optimizer(sae, lr, betas)
    ref = {k: v.detach().clone().requires_grad_(True) for k, v in sae.state_dict().items()}
    state = {"t": 0, "m": {k: torch.zeros_like(v) for k, v in ref.items()}, "v": {k: torch.zeros_like(v) for k, v in ref.items()}}

    def ours(x):
        sae_step(sae, opt, x, l1)

    def theirs(x):
        reference_step(ref, state, x, l1, lr, betas)

    for fn in (ours, theirs):  # warm-up, same batches on both
        fn(batches[0])
        fn(batches[1])
    times = {"ours": [], "reference": []}
    for x in batches[2:]:  # interleaved, so load changes hit both alike
        for name, fn in (("ours", ours), ("reference", theirs)):
            t = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t)
    peak = matmul_flops(1024, repeat=10)
    flops = 12 * a.batch * a.d_in * a.d_sae
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    diff = max((sae.state_dict()[k] - ref[k].detach()).abs().max().item() for k in ref)
    print(f"batch {a.batch}, d_in {a.d_in}, d_sae {a.d_sae}, {a.steps} timed steps each, {a.threads} thread(s)")
    print(f"our step (interplab.sae.train.sae_step): {1e3 * med['ours']:.2f} ms (median)")
    print(f"plain reference step:                    {1e3 * med['reference']:.2f} ms (median)")
    print(f"ratio ours / reference: {med['ours'] / med['reference']:.3f}")
    print(f"max |weight difference| after {a.steps + 2} steps: {diff:.2e}")
    print(f"dense matmul on this machine (1024^3, best of 10): {peak / 1e9:.1f} GFLOP/s")
    print(f"our step achieves {flops / med['ours'] / 1e9:.1f} GFLOP/s = {flops / med['ours'] / peak:.1%} of that; "
          f"reference {flops / med['reference'] / 1e9:.1f} GFLOP/s = {flops / med['reference'] / peak:.1%}")


if __name__ == "__main__":
    main()
