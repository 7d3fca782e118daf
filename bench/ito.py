"""Batched gradient pursuit against scikit-learn's per-sample OMP: speed and reconstruction agreement.

Both sides run in this one process on one thread (OMP_NUM_THREADS etc. are set to 1 before
numpy and torch load), on the same dictionary and signals, so machine load affects both alike.

    python bench/ito.py [--n-atoms 4096] [--d 512] [--n 1000] [--k 16] [--k-true 32] [--sae DIR]

Signals are nonnegative sparse combinations of ``k_true`` atoms plus Gaussian noise; with
``--sae DIR`` the dictionary is that SAE's decoder. Reported: wall time of scikit-learn's
``OrthogonalMatchingPursuit`` fitted per sample (the estimator), of its ``orthogonal_mp``
(the same per-sample algorithm, looped inside scikit-learn with a precomputed Gram matrix),
of our batched gradient pursuit and OMP; relative reconstruction errors; speed ratios; and the
GP/OMP error agreement at several L0.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.linear_model import OrthogonalMatchingPursuit, orthogonal_mp  # noqa: E402

from interplab.sae.ito import gradient_pursuit, orthogonal_matching_pursuit  # noqa: E402


def problem(n_atoms: int, d: int, n: int, k_true: int, noise: float, seed: int, sae_dir: str | None):
    g = torch.Generator().manual_seed(seed)
    if sae_dir:
        from interplab.sae.saelens import load_saelens

        D = load_saelens(sae_dir).W_dec.detach().clone()
    else:
        D = torch.randn(n_atoms, d, generator=g)
    D = D / D.norm(dim=1, keepdim=True)
    idx = torch.rand(n, D.shape[0], generator=g).argsort(1)[:, :k_true]
    codes = torch.zeros(n, D.shape[0]).scatter(1, idx, torch.rand(n, k_true, generator=g) + 0.1)
    X = codes @ D + noise * torch.randn(n, D.shape[1], generator=g)
    return D, X


def rel_err(X: np.ndarray, C: np.ndarray, D: np.ndarray) -> float:
    return float(((X - C @ D) ** 2).sum() / (X**2).sum())


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-atoms", type=int, default=4096)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--k-true", type=int, default=32)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sae", default=None, help="Use this SAELens-layout SAE's decoder as the dictionary.")
    ap.add_argument("--estimator-samples", type=int, default=None,
                    help="Time the per-sample estimator on this many samples and scale up (default: all).")
    a = ap.parse_args()
    torch.set_num_threads(1)
    D, X = problem(a.n_atoms, a.d, a.n, a.k_true, a.noise, a.seed, a.sae)
    Dn, Xn = D.double().numpy(), X.double().numpy()
    print(f"dictionary {D.shape[0]} atoms x {D.shape[1]} dims, {len(X)} signals, L0 k = {a.k}, 1 thread each side")

    m = a.estimator_samples or len(X)

    def estimator() -> np.ndarray:
        est = OrthogonalMatchingPursuit(n_nonzero_coefs=a.k, fit_intercept=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.stack([est.fit(Dn.T, x).coef_.copy() for x in Xn[:m]])

    C_est, t_est = timed(estimator)
    t_est *= len(X) / m
    C_sk, t_sk = timed(lambda: orthogonal_mp(Dn.T, Xn.T, n_nonzero_coefs=a.k, precompute=True).T)
    C_gp, t_gp = timed(lambda: gradient_pursuit(X, D, a.k, nonnegative=False), repeat=3)
    C_omp, t_omp = timed(lambda: orthogonal_matching_pursuit(X, D, a.k), repeat=3)
    C_gpn, t_gpn = timed(lambda: gradient_pursuit(X, D, a.k, nonnegative=True), repeat=3)
    C_cg, t_cg = timed(lambda: gradient_pursuit(X, D, a.k, nonnegative=False, conjugate=True), repeat=3)
    e_sk = rel_err(Xn, C_sk, Dn)
    rows = [("sklearn OrthogonalMatchingPursuit, per sample", t_est, rel_err(Xn[:m], C_est, Dn)),
            ("sklearn orthogonal_mp (per-sample loop inside)", t_sk, e_sk),
            ("interplab gradient_pursuit, batched", t_gp, rel_err(Xn, C_gp.double().numpy(), Dn)),
            ("interplab orthogonal_matching_pursuit, batched", t_omp, rel_err(Xn, C_omp.double().numpy(), Dn)),
            ("interplab gradient_pursuit nonnegative, batched", t_gpn, rel_err(Xn, C_gpn.double().numpy(), Dn)),
            ("interplab gradient_pursuit conjugate, batched", t_cg, rel_err(Xn, C_cg.double().numpy(), Dn))]
    print(f"{'method':50s} {'seconds':>9s} {'rel. error':>11s}")
    for name, t, e in rows:
        print(f"{name:50s} {t:9.3f} {e:11.5f}")
    e_gp = rows[2][2]
    print(f"speed: gradient pursuit is {t_est / t_gp:.1f}x faster than sklearn's per-sample OrthogonalMatchingPursuit, "
          f"{t_sk / t_gp:.1f}x faster than sklearn's orthogonal_mp")
    print(f"speed: our batched OMP is {t_est / t_omp:.1f}x / {t_sk / t_omp:.1f}x faster than the same two")
    print(f"agreement at L0 {a.k}: gradient pursuit error / sklearn OMP error = {e_gp / e_sk:.4f} "
          f"({100 * abs(e_gp / e_sk - 1):.2f}% apart); our OMP / sklearn OMP = {rows[3][2] / e_sk:.6f}")
    print("agreement by L0 (error / sklearn OMP error): gradient pursuit, conjugate gradient pursuit")
    for k in sorted({max(1, a.k // 4), max(1, a.k // 2), a.k, 2 * a.k}):
        sk = rel_err(Xn, orthogonal_mp(Dn.T, Xn.T, n_nonzero_coefs=k, precompute=True).T, Dn)
        gp = rel_err(Xn, gradient_pursuit(X, D, k, nonnegative=False).double().numpy(), Dn)
        cg = rel_err(Xn, gradient_pursuit(X, D, k, nonnegative=False, conjugate=True).double().numpy(), Dn)
        print(f"  L0 {k:3d}: {gp / sk:.4f}  {cg / sk:.4f}")


if __name__ == "__main__":
    main()
