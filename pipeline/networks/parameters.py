"""Parameter counting that respects weight sharing (coupled generators and discriminators)."""

from __future__ import annotations

from torch import nn


def count_parameters(*modules: nn.Module) -> int:
    """Number of distinct parameter values across ``modules``: a shared weight counts once."""
    unique = {id(p): p for module in modules for p in module.parameters()}
    return sum(p.numel() for p in unique.values())


def parameter_breakdown(module: nn.Module) -> dict[str, int]:
    """Parameters per direct child of ``module`` plus ``total``.

    A child registered under several names (a shared extractor) is listed once, under its first
    name; a grandchild shared by two children (D1 and D2's common blocks) counts in both, so the
    parts may add up to more than ``total``.
    """
    parts = {name: count_parameters(child) for name, child in module.named_children()}
    return {**parts, "total": count_parameters(module)}
