"""The plain window layout TorchScript runs equals MONAI's helpers, which the eager window orders are built from;
the gathers between orders differentiate by the inverse gather."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.swin_unetr import compute_mask, get_window_size, window_partition, window_reverse

from pipeline.networks.blocks import windows as windows_module
from pipeline.networks.blocks.windows import (
    from_windows,
    permute_rows,
    shift_mask,
    to_windows,
    window_shift,
    windows_for,
)

SIZES = [(8, 8), (8, 24), (16, 16), (24, 40)]  # window multiples, as the stages pad them; one window on a side


def _monai_shift(height: int, width: int, shifted: bool) -> list[int]:
    return list(get_window_size((height, width), (8, 8), (4 if shifted else 0,) * 2)[1])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shifted", [False, True])
def test_window_shift_is_monai_s(size: tuple[int, int], shifted: bool) -> None:
    assert window_shift(*size, 8, shifted) == _monai_shift(*size, shifted)


@pytest.mark.parametrize("size", SIZES)
def test_windows_are_monai_s_roll_and_partition_and_go_back(size: tuple[int, int]) -> None:
    z = torch.randn(2, *size, 3)
    shift = window_shift(*size, 8, True)
    rolled = torch.roll(z, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    tokens = to_windows(z, 8, shift)
    assert torch.equal(tokens, window_partition(rolled, (8, 8)).reshape(-1, 3))
    assert torch.equal(window_reverse(tokens.view(-1, 8, 8, 3), (8, 8), (2, *size)), rolled)
    assert torch.equal(from_windows(tokens, list(z.shape), 8, shift), z)


@pytest.mark.parametrize("size", SIZES)
def test_shift_mask_is_monai_s_on_every_window_of_every_image(size: tuple[int, int]) -> None:
    shift = window_shift(*size, 8, True)
    mask = shift_mask(torch.zeros(3, *size, 1), 8, shift)
    if not any(shift):
        assert mask is None
        return
    expected = compute_mask(list(size), (8, 8), shift, torch.device("cpu"))
    assert mask.dtype == expected.dtype and torch.equal(mask, expected.repeat(3, 1, 1))
    assert shift_mask(torch.zeros(1, *size, 1), 8, window_shift(*size, 8, False)) is None


def test_cpu_inference_runs_in_chunks_and_autograd_in_one(monkeypatch) -> None:
    """CPU inference in chunks; CPU autograd in one chunk, the masks for its trailing (masked) windows alone, which
    the attention kernel takes; elsewhere (a GPU) one chunk of plain windows and one of masked ones."""
    monkeypatch.setattr(windows_module, "CPU_CHUNK_TOKENS", 256)
    x = torch.zeros(2, 4, 64, 64)
    with torch.no_grad():
        chunked = windows_for(x, 8)
    whole = windows_for(x, 8)
    assert all(chunk.stop - chunk.start <= 256 for chunk in chunked.shifted.chunks)
    assert len(chunked.regular.chunks) == 2 * 64 * 64 // 256
    (chunk,) = whole.shifted.chunks
    assert (chunk.start, chunk.stop) == (0, 2 * 64 * 64)
    assert chunk.mask.shape == (2 * 15, 64, 64)  # per map, the last row and column of its 8 x 8 windows
    assert len(whole.regular.chunks) == 1 and whole.regular.chunks[0].mask is None
    split = windows_module._cached_windows(2, 64, 64, 8, torch.device("cpu"), None, False)
    assert [chunk.mask is None for chunk in split.shifted.chunks] == [True, False]
    assert torch.equal(split.shifted.chunks[1].mask, chunk.mask)
    windows_module._cached_windows.cache_clear()


def test_a_row_permutation_is_differentiated_by_the_inverse_gather() -> None:
    torch.manual_seed(0)
    index = torch.randperm(50)
    inverse = torch.empty_like(index)
    inverse[index] = torch.arange(50)
    z = torch.randn(50, 3, requires_grad=True)
    upstream = torch.randn(50, 3)
    permuted = permute_rows(z, index, inverse)
    assert torch.equal(permuted, z[index])
    assert type(permuted.grad_fn).__name__ == "_RowPermutationBackward"  # not index_select's scatter-add
    (got,) = torch.autograd.grad((permuted * upstream).sum(), z)
    (expected,) = torch.autograd.grad((z.index_select(0, index) * upstream).sum(), z)
    assert torch.equal(got, expected)
    with torch.no_grad():
        assert permute_rows(z, index, inverse).grad_fn is None
