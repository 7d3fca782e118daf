import torch

from interplab.analysis.arms import fit_arms
from interplab.analysis.grouping import dead_units, group_units


def detector_layer(n=2000, seed=0):
    """Synthetic ReLU layer: units 0-5 detect feature A, 6-9 feature B, 10-11 always on, 12-14 dead."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, generator=g) * 2 - 1
    a = torch.relu(s)[:, None] * (1 + torch.rand(1, 6, generator=g))
    b = torch.relu(-s)[:, None] * (1 + torch.rand(1, 4, generator=g))
    on = 3 + 0.1 * torch.rand(n, 2, generator=g)
    acts = torch.cat([a, b, on, torch.zeros(n, 3)], 1) + 0.01 * torch.rand(n, 15, generator=g) * (torch.arange(15) < 12)
    return s, acts


def test_group_units_separates_detectors_and_dead_units():
    s, acts = detector_layer()
    gid = group_units(acts, n_groups=3, seed=0)
    assert dead_units(acts).nonzero().reshape(-1).tolist() == [12, 13, 14]
    assert (gid[12:] == -1).all()
    assert len(set(gid[:6].tolist())) == 1 and len(set(gid[6:10].tolist())) == 1 and len(set(gid[10:12].tolist())) == 1
    assert len({int(gid[0]), int(gid[6]), int(gid[10])}) == 3


def test_fit_arms_finds_the_two_arms():
    s, acts = detector_layer()
    arms = fit_arms(acts, n_arms=2, seed=0)
    far = s.abs() > 0.2
    side = (s > 0).long()
    agree = (arms.assignment[far] == side[far]).float().mean().item()
    assert max(agree, 1 - agree) > 0.98
    # each arm direction lives on its own detector units
    loads = arms.directions.abs()
    a_arm = int(loads[:, :6].sum(1).argmax())
    assert loads[a_arm, :6].sum() > 0.9 and loads[1 - a_arm, 6:10].sum() > 0.9
