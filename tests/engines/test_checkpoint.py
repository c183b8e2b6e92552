"""A resumable training state loads into the configured optimizers as they would have stepped on."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from pipeline.engines import training_state


def _adam(param: torch.nn.Parameter, fused: bool) -> torch.optim.Adam:
    return torch.optim.Adam([param], lr=1e-2, fused=fused)


def _step(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    param.grad = torch.empty_like(param).copy_(grad)
    optimizer.step()


def test_state_saved_from_contiguous_weights_resumes_fused_and_channels_last():
    """A state written by a non-fused optimizer over contiguous weights (older code), loaded for channels-last ones
    and fused Adam: fused stays on, and the steps equal an optimizer that never changed layout."""
    torch.manual_seed(0)
    grads = torch.randn(4, 6, 5, 3, 3)
    reference = torch.nn.Parameter(torch.randn(6, 5, 3, 3))
    old_param = torch.nn.Parameter(reference.detach().clone())
    reference_adam, old_adam = _adam(reference, fused=False), _adam(old_param, fused=False)
    for grad in grads[:2]:
        _step(reference_adam, reference, grad)
        _step(old_adam, old_param, grad)
    saved = copy.deepcopy(old_adam.state_dict())

    param = torch.nn.Parameter(old_param.detach().clone().contiguous(memory_format=torch.channels_last))
    g_adam, d_adam = _adam(param, fused=True), _adam(torch.nn.Parameter(torch.zeros(1)), fused=True)
    gan = SimpleNamespace(generator=torch.nn.Module(), d1=torch.nn.Module(), d2=torch.nn.Module())
    state = training_state(gan, g_adam, d_adam, trainer=None)
    state["g_optimizer"].load_state_dict(saved)

    assert g_adam.param_groups[0]["fused"] is True
    assert g_adam.state[param]["exp_avg"].stride() == param.stride()
    for grad in grads[2:]:
        _step(reference_adam, reference, grad)
        _step(g_adam, param, grad)
    assert (param - reference).abs().max() < 1e-6
