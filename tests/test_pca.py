import torch

from interplab.analysis.pca import pca


def test_pca_recovers_planted_directions_and_variance():
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64)).Q
    z = torch.randn(5000, 6, generator=g, dtype=torch.float64) * torch.tensor([4.0, 2.0, 1.0, 0.1, 0.1, 0.1])
    x = z @ q.T + 3.0
    p = pca(x)
    assert abs(abs(float(p.components[0] @ q[:, 0])) - 1) < 1e-2
    assert abs(p.explained(2) - 20 / 21.03) < 0.01
    assert torch.allclose(p.ratio.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(p.transform(x) @ p.components + p.mean, x, atol=1e-8)
    assert pca(x, k=2).components.shape == (2, 6)
