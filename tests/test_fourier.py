"""Fourier analysis of modular addition: key frequencies, neuron frequencies, progress measures."""

import math

import torch

from interplab.analysis.fourier import (fourier_basis, frequency_norms, key_frequencies, neuron_frequencies,
                                        progress_measures, restricted_and_excluded_logits)


def _trig_embedding(p, freqs, d=16, noise=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(p).float()
    cols = [f(2 * math.pi * k * x / p) for k in freqs for f in (torch.cos, torch.sin)]
    basis = torch.stack(cols, 1)
    return basis @ torch.randn(len(cols), d, generator=g) + noise * torch.randn(p, d, generator=g)


def test_key_frequencies_found_in_a_noisy_trig_embedding():
    p = 31
    norms = frequency_norms(_trig_embedding(p, [3, 7, 11]))
    assert norms.shape == (15,)
    assert key_frequencies(norms) == [3, 7, 11]


def test_basis_is_orthonormal_and_neurons_get_their_frequency():
    p = 13
    F, names = fourier_basis(p)
    assert torch.allclose(F @ F.T, torch.eye(p), atol=1e-5) and len(names) == p
    a = torch.arange(p).float()[:, None, None]
    b = torch.arange(p).float()[None, :, None]
    w = 2 * math.pi / p
    acts = torch.cat([torch.relu(torch.cos(w * 4 * (a + b)) + 0.3), torch.cos(w * 2 * a) * torch.sin(w * 2 * b)], -1)
    freq, share = neuron_frequencies(acts)
    assert freq.tolist() == [4, 2]
    assert share[1] > 0.99 and share[0] > 0.5


def test_restricted_and_excluded_loss_separate_a_fourier_model_from_a_lookup_table():
    p = 11
    r = torch.arange(p).float()
    s = r[:, None, None] + r[None, :, None] - r[None, None, :]
    fourier = 8 * (torch.cos(2 * math.pi * 2 * s / p) + torch.cos(2 * math.pi * 5 * s / p))
    g = torch.Generator().manual_seed(0)
    train_idx = torch.randperm(p * p, generator=g)[:40]
    labels = (r[:, None] + r[None, :]).long() % p
    table = torch.randn(p, p, p, generator=g)  # memorised: right answers on the training pairs only
    flat = table.reshape(p * p, p)
    flat[train_idx, labels.flatten()[train_idx]] += 12.0
    gen = progress_measures(fourier, [2, 5], train_idx)
    mem = progress_measures(table, [2, 5], train_idx)
    assert gen["restricted_loss"] < 0.1 and gen["excluded_loss"] > 1.5
    assert mem["restricted_loss"] > 1.0 and mem["excluded_loss"] < 0.5
    kept, rest = restricted_and_excluded_logits(fourier, [2, 5])
    assert torch.allclose(kept, fourier, atol=1e-4) and rest.abs().max() < 1e-4
