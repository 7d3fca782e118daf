"""The CPU-only device-mixing detector (tests/device_mix.py) flags what a GPU would refuse, and only that."""

from __future__ import annotations

import pytest
import torch
from device_mix import DeviceMixError, detect_device_mixing

from interplab.devices import Placement, model_device, to_host


def _placed(monkeypatch):
    ctx = detect_device_mixing(monkeypatch)
    mode = ctx.__enter__()
    m = Placement("cpu").apply(torch.nn.Linear(3, 2))
    return ctx, mode, m


def test_mixed_ops_fail_and_followed_devices_pass(monkeypatch):
    ctx, mode, m = _placed(monkeypatch)
    try:
        x = torch.ones(4, 3)  # created on the host
        with pytest.raises(DeviceMixError, match="linear"):
            m(x)
        y = m(x.to(model_device(m)))  # moved where the model is
        assert mode.on_device(y) and not mode.on_device(x)  # the move tagged a copy, not the caller's tensor
        with pytest.raises(DeviceMixError, match="matmul"):
            y @ torch.eye(2)
        y @ torch.eye(2, device=y.device)
        y * torch.tensor(2.0)  # a 0-dim host tensor is allowed, as on CUDA
        y[torch.tensor([0, 1])]  # so is indexing a device tensor with host indices
        with pytest.raises(DeviceMixError, match="cross_entropy"):
            torch.nn.functional.cross_entropy(y, torch.tensor([0, 1, 0, 1]))
        with pytest.raises(DeviceMixError, match="numpy"):
            y.detach().numpy()
        h = to_host(y)
        assert not mode.on_device(h) and h.numpy().shape == (4, 2)
        with pytest.raises(DeviceMixError, match="CPU generator"):
            torch.randn(2, generator=torch.Generator(), device=y.device)
    finally:
        ctx.__exit__(None, None, None)


def test_a_model_moved_to_the_host_is_host(monkeypatch):
    ctx, mode, m = _placed(monkeypatch)
    try:
        assert mode.on_device(m.weight)
        m.to(device="cpu")
        assert not mode.on_device(m.weight)
        m(torch.ones(2, 3))
    finally:
        ctx.__exit__(None, None, None)
