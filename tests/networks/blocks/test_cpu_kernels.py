"""The CPU kernels give ATen's numbers and gradients (window attention: SDPA's; LayerNorm: F.layer_norm's; GELU:
F.gelu's), and the blocks fall back to ATen without them."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from monai.networks.blocks import MLPBlock

from pipeline.networks import DCIFGAN
from pipeline.networks.blocks import cpu_kernels
from pipeline.networks.blocks.cross_modal import CrossModalBlock


AVX2_FLAGS = (*cpu_kernels.FLAGS, "-mno-avx512f")


@pytest.fixture(params=["native", "avx2"])
def kernel(request, monkeypatch):
    """The kernels this CPU runs and, on an AVX-512 CPU, their AVX2 build (8-float lanes, lanes.h) in their place."""
    found = cpu_kernels.cpu_kernel()
    if found is None:
        pytest.skip("the CPU kernels could not be built here (no C++ compiler?)")
    if request.param == "avx2":
        if found.lanes == 8:
            pytest.skip("this CPU has no AVX-512: its own build, tested as native, is the AVX2 one")
        found = cpu_kernels.build(AVX2_FLAGS)
        assert found.lanes == 8
        monkeypatch.setattr(cpu_kernels, "cpu_kernel", lambda: found)
    return found.window_attention


def _shift_mask(windows: int) -> torch.Tensor:
    """Symmetric 0 / -100 masks as SW-MSA's: tokens see each other iff they share a (random) region."""
    region = torch.randint(0, 3, (windows, 64))
    return torch.where(region.unsqueeze(2) == region.unsqueeze(1), 0.0, -100.0)


def _trailing_masks(windows: int, masked: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The kernel's mask for ``masked`` "none", "every" window or the "last" ones (a shifted order's, which puts its
    masked windows last), and each window's mask for SDPA (zeros for the windows the kernel's leaves out)."""
    if masked == "none":
        return None, None
    every = _shift_mask(windows)
    if masked == "every":
        return every, every
    every[: windows // 2] = 0
    return every[windows // 2:], every


def _qkv(windows: int, heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q, K, V as the strided views a block's projection gives: (windows, heads, 64, head_dim)."""
    qkv = torch.randn(windows, 64, 3, heads, head_dim)
    q, k, v = qkv.unbind(2)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


@pytest.mark.parametrize("head_dim", cpu_kernels.HEAD_DIMS)
@pytest.mark.parametrize("masked", ["none", "every", "last"])
def test_kernel_matches_sdpa(kernel, head_dim: int, masked: str) -> None:
    torch.manual_seed(head_dim)
    windows, heads = 37, 3
    q, k, v = _qkv(windows, heads, head_dim)
    bias = torch.randn(heads, 64, 64)
    mask, every = _trailing_masks(windows, masked)
    attn_mask = bias.unsqueeze(0) + (0 if every is None else every.unsqueeze(1))
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=head_dim**-0.5)
    got = kernel(q, k, v, bias.permute(0, 2, 1).contiguous().permute(0, 2, 1),
                 torch.empty(0) if mask is None else mask, head_dim**-0.5)
    assert got.shape == (windows, 64, heads, head_dim)  # tokens then heads: the projection's layout
    assert (got - expected.transpose(1, 2)).abs().max() < 1e-5


def test_kernels_flush_denormals_and_restore_the_callers_mode(kernel) -> None:
    """A shifted window's -100 mask makes softmax weights of 2^-126 whose products are denormal, each a microcode
    assist on an Intel core (the masked windows ran 30x slower): the attention and GELU kernels flush denormals to
    zero, then give the thread back its own mode, so ATen's arithmetic keeps them."""
    torch.manual_seed(0)
    q, k, v = _qkv(4, 2, 8)
    denormal = 1e-39
    out = kernel(q, k, torch.full_like(v, denormal), torch.zeros(2, 64, 64), _shift_mask(4), 8**-0.5)
    assert out.abs().max() == 0
    found = cpu_kernels.cpu_kernel()
    assert found.gelu(torch.full((4, 32), denormal), torch.empty(0), torch.empty(4, 32)).abs().max() == 0
    assert torch.tensor(denormal) * 1.0 != 0  # this thread ran both calls (below their grain): its mode is back


@pytest.mark.parametrize("head_dim", cpu_kernels.HEAD_DIMS)
@pytest.mark.parametrize("masked", ["none", "every", "last"])
@pytest.mark.parametrize("cross", [False, True])
def test_kernel_gradients_match_sdpa(kernel, head_dim: int, masked: str, cross: bool) -> None:
    """Self-attention (Q, K, V of one projection) and CMIFM's cross-attention (Q of one, K and V of the other)."""
    torch.manual_seed(head_dim + len(masked))
    windows, heads = 5, 2
    queries = torch.randn(windows, 64, 3, heads, head_dim, requires_grad=True)
    keys_values = torch.randn(windows, 64, 3, heads, head_dim, requires_grad=True) if cross else queries
    bias = torch.randn(heads, 64, 64, requires_grad=True)
    mask, every = _trailing_masks(windows, masked)
    upstream = torch.randn(windows, 64, heads, head_dim)
    inputs = (queries, keys_values, bias) if cross else (queries, bias)
    got = cpu_kernels.window_attention(queries, keys_values, bias, mask, head_dim**-0.5)
    got_grads = torch.autograd.grad((got * upstream).sum(), inputs)
    q, k, v = (z.transpose(1, 2) for z in (queries[:, :, 0], keys_values[:, :, 1], keys_values[:, :, 2]))
    attn_mask = bias.unsqueeze(0) if every is None else bias.unsqueeze(0) + every.unsqueeze(1)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=head_dim**-0.5).transpose(1, 2)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), inputs)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        assert (got_grad - expected_grad).abs().max() < 1e-4


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_is_both_directions_in_one_node(kernel, masked: bool) -> None:
    """CMIFM's two directions by one node: the outputs and every gradient of two window_attention calls."""
    torch.manual_seed(3 + masked)
    windows, heads, head_dim = 4, 2, 8
    inputs = (torch.randn(windows, 64, 3, heads, head_dim, requires_grad=True),
              torch.randn(windows, 64, 3, heads, head_dim, requires_grad=True),
              torch.randn(heads, 64, 64, requires_grad=True), torch.randn(heads, 64, 64, requires_grad=True))
    qkv_a, qkv_b, bias_a, bias_b = inputs
    mask = _shift_mask(windows) if masked else None
    upstream_a, upstream_b = torch.randn(2, windows, 64, heads, head_dim)
    got_a, got_b = cpu_kernels.cross_attention(qkv_a, qkv_b, bias_a, bias_b, mask, head_dim**-0.5)
    assert type(got_a.grad_fn).__name__ == "_CrossAttentionBackward"
    got_grads = torch.autograd.grad((got_a * upstream_a).sum() + (got_b * upstream_b).sum(), inputs)
    expected_a = cpu_kernels.window_attention(qkv_a, qkv_b, bias_a, mask, head_dim**-0.5)
    expected_b = cpu_kernels.window_attention(qkv_b, qkv_a, bias_b, mask, head_dim**-0.5)
    expected_grads = torch.autograd.grad((expected_a * upstream_a).sum() + (expected_b * upstream_b).sum(), inputs)
    assert torch.equal(got_a, expected_a) and torch.equal(got_b, expected_b)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        assert (got_grad - expected_grad).abs().max() < 1e-5
    with torch.inference_mode():
        plain_a, plain_b = cpu_kernels.cross_attention(qkv_a, qkv_b, bias_a, bias_b, mask, head_dim**-0.5)
    assert torch.equal(plain_a, expected_a) and torch.equal(plain_b, expected_b)


def test_a_cmifm_block_runs_its_two_directions_as_one_node(kernel) -> None:
    block = CrossModalBlock(16, 2, 8, shifted=False, mlp_ratio=2.0)
    x_ct, x_pet = torch.randn(2, 3 * 64, 16)
    out_ct, _ = block.step(x_ct, x_pet, block.biases(64), None, 64)
    seen, todo = set(), [out_ct.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo.extend(next_node for next_node, _ in node.next_functions)
    names = {type(node).__name__ for node in seen}
    assert "_CrossAttentionBackward" in names and "_WindowAttentionBackward" not in names


def test_kernel_refuses_shapes_it_was_not_built_for(kernel) -> None:
    projection = torch.randn(2, 64, 3, 2, 12)
    with pytest.raises(RuntimeError, match="head dim"):
        kernel(*cpu_kernels.split_projections(projection, projection), torch.zeros(2, 64, 64), torch.empty(0), 0.3)
    assert not cpu_kernels.kernel_applies(projection)
    assert not cpu_kernels.kernel_applies(torch.randn(2, 64, 3, 2, 8).double())


def test_generator_gives_the_same_output_and_gradients_with_and_without_the_kernel(kernel, monkeypatch) -> None:
    torch.manual_seed(0)
    generator = DCIFGAN("network4", width=16, num_heads=2, depths=(2, 2, 1)).generator
    x = torch.rand(2, 2, 48, 40)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.inference_mode():
            fused = generator.eval()(x)
        loss = generator.train()(x).square().mean()
        return fused, torch.autograd.grad(loss, list(generator.parameters()))

    with_kernel, kernel_grads = run()
    monkeypatch.setattr(cpu_kernels, "_kernels_take", lambda x: False)  # both kernels off
    without, aten_grads = run()
    assert (with_kernel - without).abs().max() < 1e-5
    # Each gradient against its own scale: the position biases' are about 1e-5, under any absolute tolerance that
    # suits the weights', so a lost bias gradient would pass one.
    assert all((a - b).abs().max() <= 1e-3 * b.abs().max() + 1e-9 for a, b in zip(kernel_grads, aten_grads))
    assert all(b.abs().max() > 0 for b in aten_grads)


def test_switched_off_it_is_not_built(monkeypatch) -> None:
    monkeypatch.setenv("DCIF_CPU_KERNELS", "0")
    cpu_kernels.cpu_kernel.cache_clear()
    try:
        assert cpu_kernels.cpu_kernel() is None
        assert not cpu_kernels.kernel_applies(torch.randn(2, 64, 3, 2, 8))
    finally:
        monkeypatch.delenv("DCIF_CPU_KERNELS")
        cpu_kernels.cpu_kernel.cache_clear()


def _fallback_warnings(caplog) -> list[str]:
    """Load the kernel afresh, which must fall back to ATen; the warnings that logged."""
    cpu_kernels.cpu_kernel.cache_clear()
    try:
        assert cpu_kernels.cpu_kernel() is None
    finally:
        cpu_kernels.cpu_kernel.cache_clear()
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_builder_that_cannot_be_imported_falls_back_with_one_warning(monkeypatch, caplog) -> None:
    """The deploy app's Holoscan imports distutils first, and setuptools' shim then asserts on import."""
    monkeypatch.setitem(sys.modules, "torch.utils.cpp_extension", None)
    warnings = _fallback_warnings(caplog)
    assert len(warnings) == 1 and warnings[0].startswith("CPU kernels unavailable (")


@pytest.fixture
def build_root(tmp_path, monkeypatch) -> Path:
    """An empty extensions folder (``TORCH_EXTENSIONS_DIR``), so a test's builds and failures stay its own."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    return tmp_path / "extensions"


def test_a_failed_build_falls_back_with_one_warning_and_is_not_tried_again(build_root, monkeypatch, caplog) -> None:
    calls = []

    def broken_load(**kwargs):
        calls.append(kwargs["build_directory"])
        raise RuntimeError("Error building extension 'k': [1/6] c++ -c window_attention.cpp\n"
                           "lanes.h:102:13: error: '__builtin_shufflevector' was not declared in this scope\n"
                           "ninja: build stopped: subcommand failed.")

    monkeypatch.setattr("torch.utils.cpp_extension.load", broken_load)
    first = _fallback_warnings(caplog)
    assert first == ["CPU kernels unavailable (lanes.h:102:13: error: '__builtin_shufflevector' was not declared in "
                     "this scope); using ATen's attention, LayerNorm, GELU and linear layers"]
    caplog.clear()
    again = _fallback_warnings(caplog)  # a later process: the error, without minutes of building
    assert len(calls) == 1 and Path(calls[0]).parent == build_root
    assert len(again) == 1 and "'__builtin_shufflevector' was not declared" in again[0]
    assert f"remove {Path(calls[0]) / cpu_kernels.FAILED} to try again" in again[0]


def test_a_missing_compiler_is_the_reason_given(build_root, monkeypatch, caplog) -> None:
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: pytest.fail("built without a compiler"))
    monkeypatch.setenv("CXX", str(build_root / "no-such-compiler"))
    assert _fallback_warnings(caplog) == [f"CPU kernels unavailable (no C++ compiler ({build_root}/no-such-compiler)); "
                                         "using ATen's attention, LayerNorm, GELU and linear layers"]


def test_processors_that_differ_in_features_build_apart(tmp_path) -> None:
    """ARM's /proc/cpuinfo has no model name or flags: its implementer, part and features tell two CPUs apart."""
    graviton = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics {}\n" \
               "CPU implementer\t: 0x41\nCPU part\t: {}\n"
    keys = []
    for features, part in (("", "0xd0c"), (" sve svei8mm", "0xd40")):
        cpuinfo = tmp_path / part
        cpuinfo.write_text(graviton.format(features, part) * 2)  # one block per core
        keys.append(cpu_kernels._processor(cpuinfo))
    assert keys[0] != keys[1] and keys[0].count("Features") == 1


def _build_folder(monkeypatch) -> Path:
    """The folder ``build(("-O0",))`` uses, from a first build that torch's loader only records."""
    folders = []
    monkeypatch.setattr("torch.utils.cpp_extension.load",
                        lambda build_directory, **kwargs: folders.append(Path(build_directory)) or object())
    cpu_kernels.build(("-O0",))
    return folders[0]


def test_a_read_only_cache_that_holds_a_build_is_imported_as_it_is(build_root, monkeypatch) -> None:
    """A shared home or an image's cache that someone else built: torch's loader would write its lock there and fail."""
    folder = _build_folder(monkeypatch)
    assert folder.parent == build_root  # TORCH_EXTENSIONS_DIR, which torch's default build root ignores
    (folder / f"{folder.name}.so").write_bytes(b"")
    imported = object()
    monkeypatch.setattr(cpu_kernels, "_import_built", lambda name, library: imported)
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kwargs: pytest.fail("built again"))
    monkeypatch.setattr(cpu_kernels.os, "access", lambda path, mode: mode != os.W_OK)  # tests may run as root
    assert cpu_kernels.build(("-O0",)) is imported


def test_a_builder_killed_while_building_leaves_nothing_the_next_waits_on(build_root, monkeypatch, caplog) -> None:
    """A builder SIGKILLed half-way (a scheduler's kill, memory) leaves torch's lock file, on which torch's loader would
    wait for ever: the next process waits while the builder lives, then builds."""
    import signal
    import subprocess

    from torch.utils.file_baton import FileBaton

    folder, built = _build_folder(monkeypatch), object()

    def load_like_torch(build_directory: str, **kwargs) -> object:
        baton = FileBaton(str(Path(build_directory) / "lock"))
        assert baton.try_acquire(), "torch's lock was left in place: its loader would wait on it for ever"
        baton.release()
        return built

    monkeypatch.setattr("torch.utils.cpp_extension.load", load_like_torch)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from pathlib import Path; "
         "from pipeline.networks.blocks.cpu_kernels import _one_builder\n"
         f"with _one_builder(Path({str(folder)!r})):\n"
         f"    Path({str(folder)!r}, 'lock').touch(); print('building', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(cpu_kernels.__file__).parents[3])
    try:
        assert holder.stdout.readline().strip() == "building"
        result = {}
        waiting = threading.Thread(target=lambda: result.setdefault("module", cpu_kernels.build(("-O0",))), daemon=True)
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive(), "built while another process was building"
        holder.send_signal(signal.SIGKILL)
        waiting.join(timeout=30)
        assert result.get("module") is built
    finally:
        holder.kill()
        holder.wait()
    assert "CPU kernels unavailable" not in caplog.text


def test_two_checkouts_of_the_same_sources_build_apart(tmp_path, monkeypatch) -> None:
    folders = []

    def record(build_directory: str, **kwargs) -> object:
        folders.append(Path(build_directory).name)
        return object()

    monkeypatch.setattr("torch.utils.cpp_extension.get_default_build_root", lambda: str(tmp_path / "builds"))
    monkeypatch.setattr("torch.utils.cpp_extension.load", record)
    cpu_kernels.build(("-O0",))
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("SOURCES", "HEADERS"):
        files = tuple(copy / source.name for source in getattr(cpu_kernels, name))
        for source, target in zip(getattr(cpu_kernels, name), files):
            target.write_bytes(source.read_bytes())
        monkeypatch.setattr(cpu_kernels, name, files)
    cpu_kernels.build(("-O0",))
    cpu_kernels.build(("-O0",))
    assert folders[1] == folders[2] != folders[0]


def test_a_trace_records_aten_attention_not_the_kernel(kernel) -> None:
    """TorchScript tracing (ckpt_export, ONNX) cannot see into the kernel: the traced graph must hold ATen's ops."""
    torch.manual_seed(0)
    generator = DCIFGAN("network4", width=16, num_heads=2, depths=(2, 2, 1)).generator.eval()
    x = torch.rand(1, 2, 32, 40)
    with torch.no_grad():
        traced = torch.jit.trace(generator, x, check_trace=False)
        other = torch.rand(1, 2, 32, 40)
        assert (traced(other) - generator(other)).abs().max() < 1e-5
    assert "scaled_dot_product_attention" in str(traced.inlined_graph)


@pytest.mark.parametrize("channels", [16, 32, 48, 60, 24])
def test_layer_norm_kernel_matches_aten_forward_and_backward(kernel, channels: int) -> None:
    """Every compiled channel count, and one that takes the generic loop (24); 5000 rows leave each thread
    rows past its last whole block of lanes, which take the row loop."""
    torch.manual_seed(channels)
    aten, ours = torch.nn.LayerNorm(channels), cpu_kernels.TokenLayerNorm(channels)
    with torch.no_grad():
        aten.weight.normal_(), aten.bias.normal_()
    ours.load_state_dict(aten.state_dict())
    x = (torch.randn(5000, channels) * 3 + 1).requires_grad_()
    x_ours = x.detach().clone().requires_grad_()
    grad = torch.randn(5000, channels)
    expected, got = aten(x), ours(x_ours)
    assert (expected - got).abs().max() < 1e-5
    expected.backward(grad)
    got.backward(grad)
    assert (x.grad - x_ours.grad).abs().max() < 1e-4
    assert (aten.weight.grad - ours.weight.grad).abs().max() < 1e-3 * aten.weight.grad.abs().max()
    assert (aten.bias.grad - ours.bias.grad).abs().max() < 1e-3 * aten.bias.grad.abs().max()
    with torch.inference_mode():
        assert (aten(x) - ours(x)).abs().max() < 1e-5


def test_layer_norm_kernel_is_what_the_block_runs(kernel, monkeypatch) -> None:
    """The kernel is called for 2-D float32 tokens, and a map-shaped (B, H, W, C) input takes ATen's path."""
    calls = []
    real = cpu_kernels.cpu_kernel()

    class Counting:
        def __getattr__(self, name):
            if name == "layer_norm":
                calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(cpu_kernels, "cpu_kernel", lambda: Counting())
    norm = cpu_kernels.TokenLayerNorm(16)
    with torch.inference_mode():
        norm(torch.randn(64, 16))
        assert calls == ["layer_norm"]
        norm(torch.randn(2, 8, 8, 16))
        assert calls == ["layer_norm"]


@pytest.mark.parametrize("channels", [32, 64, 20])
def test_gelu_kernel_matches_aten_forward_and_backward(kernel, channels: int) -> None:
    """The erf form over the whole float range the erf polynomial clamps (|x| up to 20), with and without the
    bias, in place and not; 20 channels end each row in a partial group of lanes."""
    torch.manual_seed(channels)
    found = cpu_kernels.cpu_kernel()
    x = torch.randn(3000, channels) * 5
    bias = torch.randn(channels)
    expected = F.gelu(x + bias)
    assert (found.gelu(x, bias, torch.empty_like(x)) - expected).abs().max() < 1e-5
    assert (found.gelu(x, torch.empty(0), torch.empty_like(x)) - F.gelu(x)).abs().max() < 1e-5
    in_place = x.clone()
    assert found.gelu(in_place, bias, in_place).data_ptr() == in_place.data_ptr()
    assert (in_place - expected).abs().max() < 1e-5
    x_aten = (x + bias).requires_grad_()
    grad = torch.randn_like(x)
    F.gelu(x_aten).backward(grad)
    assert (found.gelu_backward(x + bias, grad) - x_aten.grad).abs().max() < 1e-5


def test_linear_gelu_matches_aten_with_and_without_autograd(kernel) -> None:
    """Inference folds the bias into the kernel and overwrites the GEMM's output; training keeps an autograd node
    whose gradients are ATen's."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 32)
    x = torch.randn(700, 16, requires_grad=True)
    expected = F.gelu(linear(x))
    with torch.inference_mode():
        assert (cpu_kernels.linear_gelu(x, linear) - expected).abs().max() < 1e-5
    got = cpu_kernels.linear_gelu(x, linear)
    assert (got - expected).abs().max() < 1e-5
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [x, *linear.parameters()], grad)
    got_grads = torch.autograd.grad(got, [x, *linear.parameters()], grad)
    assert all((a - b).abs().max() < 1e-4 for a, b in zip(got_grads, expected_grads))


def test_gelu_kernel_refuses_what_it_was_not_built_for(kernel) -> None:
    found = cpu_kernels.cpu_kernel()
    rows = torch.randn(8, 32)
    with pytest.raises(RuntimeError, match="contiguous float32 CPU rows"):
        found.gelu(rows.t(), torch.empty(0), torch.empty(32, 8))
    with pytest.raises(RuntimeError, match="bias must be contiguous float32 of C values"):
        found.gelu(rows, torch.randn(31), rows)
    with pytest.raises(RuntimeError, match="grad must match x"):
        found.gelu_backward(rows, torch.randn(8, 31))


@pytest.mark.parametrize(("rows", "in_features", "out_features", "bias"),
                         [(1000, 32, 96, True), (131, 16, 48, True), (7, 64, 32, False), (5, 16, 16, True)])
def test_token_linear_matches_aten_forward_and_backward(kernel, rows, in_features, out_features, bias) -> None:
    """Row counts that are not a multiple of the kernel's 6-row tiles, or fewer than one tile, and no bias."""
    torch.manual_seed(rows)
    linear = torch.nn.Linear(in_features, out_features, bias=bias)
    x = torch.randn(rows, in_features, requires_grad=True)
    expected = F.linear(x, linear.weight, linear.bias)
    got = cpu_kernels.token_linear(x, linear)
    assert (got - expected).abs().max() < 1e-5
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [x, *linear.parameters()], grad)
    got_grads = torch.autograd.grad(got, [x, *linear.parameters()], grad)
    for got_grad, expected_grad in zip(got_grads, expected_grads):  # dW and db sum over all rows: relative rounding
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-4)
    with torch.inference_mode():
        assert (cpu_kernels.token_linear(x, linear) - expected).abs().max() < 1e-5
        tokens = torch.randn(rows, out_features)
        summed = tokens + expected
        assert cpu_kernels.add_linear_(tokens, x, linear).data_ptr() == tokens.data_ptr()
        assert (tokens - summed).abs().max() < 1e-5


def test_token_linear_adds_a_residual_and_passes_it_its_gradient(kernel) -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(32, 16)
    x = torch.randn(100, 32, requires_grad=True)
    residual = torch.randn(100, 16, requires_grad=True)
    expected = residual + F.linear(x, linear.weight, linear.bias)
    got = cpu_kernels.token_linear(x, linear, residual=residual)
    assert (got - expected).abs().max() < 1e-5
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [x, residual, *linear.parameters()], grad)
    got_grads = torch.autograd.grad(got, [x, residual, *linear.parameters()], grad)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-4)
    with torch.inference_mode():
        assert (cpu_kernels.token_linear(x, linear, residual=residual) - expected).abs().max() < 1e-5


def test_token_linear_weight_gradient_alone(kernel) -> None:
    """A frozen input (the first layer after a detached map) asks for dW and db only."""
    linear = torch.nn.Linear(32, 64)
    x = torch.randn(300, 32)
    got = torch.autograd.grad(cpu_kernels.token_linear(x, linear).sum(), list(linear.parameters()))
    expected = torch.autograd.grad(linear(x).sum(), list(linear.parameters()))
    assert all((a - b).abs().max() < 1e-4 for a, b in zip(got, expected))


def test_token_linear_runs_the_kernel_for_widths_in_16s_and_aten_for_others(kernel, monkeypatch) -> None:
    """A layer of 16 -> 48 channels goes through the kernel, forward and backward; SwinFusion's width (60) is not a
    multiple of 16 and takes ATen's GEMM with the same numbers."""
    calls = []
    real = cpu_kernels.cpu_kernel()

    class Counting:
        def __getattr__(self, name):
            if name.startswith("token_linear"):
                calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(cpu_kernels, "cpu_kernel", lambda: Counting())
    tokens = torch.randn(128, 16, requires_grad=True)
    cpu_kernels.token_linear(tokens, torch.nn.Linear(16, 48)).sum().backward()
    assert calls == ["token_linear", "token_linear_backward"]
    wide = torch.nn.Linear(60, 120)
    x = torch.randn(50, 60)
    with torch.inference_mode():
        assert torch.equal(cpu_kernels.token_linear(x, wide), wide(x))
    assert calls == ["token_linear", "token_linear_backward"]


def test_token_linear_refuses_what_it_was_not_built_for(kernel) -> None:
    found = cpu_kernels.cpu_kernel()
    x, weight = torch.randn(8, 32), torch.randn(48, 32)
    with pytest.raises(RuntimeError, match="contiguous float32"):
        found.token_linear(x.t().contiguous().t(), weight, torch.empty(0), torch.empty(8, 48), torch.empty(0))
    with pytest.raises(RuntimeError, match="multiples of 16"):
        found.token_linear(torch.randn(8, 20), torch.randn(48, 20), torch.empty(0), torch.empty(8, 48), torch.empty(0))
    with pytest.raises(RuntimeError, match="bias must be empty"):
        found.token_linear(x, weight, torch.randn(47), torch.empty(8, 48), torch.empty(0))
    with pytest.raises(RuntimeError, match="add must be"):
        found.token_linear(x, weight, torch.empty(0), torch.empty(8, 48), torch.randn(8, 32))
    with pytest.raises(RuntimeError, match="grad must be"):
        found.token_linear_backward(x, weight, torch.randn(8, 47), True)


def _pre_norm_layers(channels: int, hidden: int) -> tuple[torch.nn.LayerNorm, torch.nn.Linear, MLPBlock]:
    """A block's LayerNorm (random affine), a projection and a GELU feed-forward, as the Swin blocks hold them."""
    norm = cpu_kernels.TokenLayerNorm(channels)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    return norm, torch.nn.Linear(channels, 3 * channels), MLPBlock(channels, hidden, act="GELU", dropout_mode="swin")


@pytest.mark.parametrize(("rows", "channels", "hidden"), [(5000, 16, 32), (97, 32, 64), (7, 48, 96), (48, 16, 64)])
def test_fused_pre_norm_layers_match_aten(kernel, rows: int, channels: int, hidden: int) -> None:
    """LN then projection, and both residuals (output projection, then LN and feed-forward) added in place, against
    ATen's ops: row counts past the last whole block of 48 rows, a partial first block, exactly one block."""
    torch.manual_seed(rows)
    found = cpu_kernels.cpu_kernel()
    norm, linear, mlp = _pre_norm_layers(channels, hidden)
    proj = torch.nn.Linear(channels, channels)
    x, attended = torch.randn(rows, channels) * 3 + 1, torch.randn(rows, channels)
    with torch.inference_mode():
        expected_projection = linear(F.layer_norm(x, (channels,), norm.weight, norm.bias, norm.eps))
        projection = found.norm_linear(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, torch.empty(0))
        assert (projection - expected_projection).abs().max() < 1e-5
        attention_sum = x + proj(attended)
        expected_sum = attention_sum + mlp(F.layer_norm(attention_sum, (channels,), norm.weight, norm.bias, norm.eps))
        summed = x.clone()
        out = found.residuals(summed, attended, proj.weight, proj.bias, norm.weight, norm.bias, norm.eps,
                              mlp.linear1.weight, mlp.linear1.bias, mlp.linear2.weight, mlp.linear2.bias, summed,
                              torch.empty(0), False)
        assert out.data_ptr() == summed.data_ptr()
        assert (summed - expected_sum).abs().max() < 1e-5


@pytest.mark.parametrize(("rows", "channels", "hidden"), [(5000, 16, 32), (97, 32, 64), (48, 16, 64)])
def test_fused_pre_norm_layers_read_and_write_a_maps_rows(kernel, rows: int, channels: int, hidden: int) -> None:
    """Inference on a chunk of a map kept in its own order: LN then projection of the map's rows ``rows`` (in that
    order), and both residuals read from and written back to those rows in place, the map's other rows untouched."""
    torch.manual_seed(rows)
    found = cpu_kernels.cpu_kernel()
    norm, linear, mlp = _pre_norm_layers(channels, hidden)
    proj = torch.nn.Linear(channels, channels)
    x = torch.randn(2 * rows + 3, channels) * 3 + 1
    chunk = torch.randperm(x.shape[0])[:rows]
    attended = torch.randn(rows, channels)
    with torch.inference_mode():
        expected_projection = linear(F.layer_norm(x[chunk], (channels,), norm.weight, norm.bias, norm.eps))
        projection = found.norm_linear(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, chunk)
        assert (projection - expected_projection).abs().max() < 1e-5
        attention_sum = x[chunk] + proj(attended)
        expected = attention_sum + mlp(F.layer_norm(attention_sum, (channels,), norm.weight, norm.bias, norm.eps))
        layers = (proj.weight, proj.bias, norm.weight, norm.bias, norm.eps, mlp.linear1.weight, mlp.linear1.bias,
                  mlp.linear2.weight, mlp.linear2.bias)
        into = torch.full_like(x, float("nan"))  # a stage's own map, written from its input's
        assert found.residuals(x, attended, *layers, into, chunk, True).data_ptr() == into.data_ptr()
        assert (into[chunk] - expected).abs().max() < 1e-5
        assert into.isnan().sum() == (x.shape[0] - rows) * channels  # the other rows untouched
        given = x.clone()
        assert found.residuals(x, attended, *layers, x, chunk, True).data_ptr() == x.data_ptr()  # in place
        assert (x[chunk] - expected).abs().max() < 1e-5
        others = torch.ones(x.shape[0], dtype=torch.bool).index_fill_(0, chunk, False)
        assert torch.equal(x[others], given[others])
        with pytest.raises(RuntimeError, match="dest indices must be rows of the output"):
            found.norm_linear(x, norm.weight, norm.bias, norm.eps, linear.weight, linear.bias, chunk + x.shape[0])


def test_a_maps_rows_are_for_inference_only() -> None:
    """A map's rows are read and overwritten in place, which autograd (keeping its inputs) cannot allow: under it the
    layers refuse them rather than read the map whole."""
    norm, linear, mlp = _pre_norm_layers(16, 32)
    proj = torch.nn.Linear(16, 16)
    x, attended, rows = torch.randn(10, 16), torch.randn(4, 16), torch.arange(4)
    with pytest.raises(ValueError, match="without autograd"):
        cpu_kernels.norm_linear(x, norm, linear, rows)
    with pytest.raises(ValueError, match="without autograd"):
        cpu_kernels.residuals(x, attended, proj, norm, mlp, rows=rows)


@pytest.mark.parametrize(("rows", "channels", "hidden"), [(5000, 16, 32), (97, 32, 64), (7, 48, 96), (48, 16, 64)])
def test_fused_pre_norm_layers_train_as_aten(kernel, rows: int, channels: int, hidden: int) -> None:
    """Under autograd the fused LN + projection and the two residuals (output projection, LN, feed-forward) give
    ATen's outputs and the gradients of float64 ATen ops for the tokens, the attention's output, the LayerNorm and
    every layer, with what the forwards kept in L1 recomputed in the backwards."""
    torch.manual_seed(rows)
    norm, linear, mlp = _pre_norm_layers(channels, hidden)
    proj = torch.nn.Linear(channels, channels)
    x = (torch.randn(rows, channels) * 3 + 1).requires_grad_()
    attended = torch.randn(rows, channels, requires_grad=True)
    modules = (norm, linear, mlp, proj)
    params = [p for module in modules for p in module.parameters()]
    projection, tokens = cpu_kernels.norm_linear(x, norm, linear)  # x's two gradients summed in one kernel
    out = (projection, cpu_kernels.residuals(tokens, attended, proj, norm, mlp))
    grads = [torch.randn_like(o) for o in out]
    found = torch.autograd.grad(out, [x, attended, *params], grads)

    reference = [module.double() for module in modules]
    x64, attended64 = (t.detach().double().requires_grad_() for t in (x, attended))
    summed = x64 + reference[3](attended64)
    expected_out = (reference[1](F.layer_norm(x64, (channels,), reference[0].weight, reference[0].bias, norm.eps)),
                    summed + reference[2](F.layer_norm(summed, (channels,), reference[0].weight, reference[0].bias,
                                                       norm.eps)))
    expected = torch.autograd.grad(expected_out, [x64, attended64, *[p for m in reference for p in m.parameters()]],
                                   [g.double() for g in grads])
    for got, want in zip(out, expected_out):
        assert (got.double() - want).abs().max() < 1e-4
    for got, want in zip(found, expected):
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize(("rows", "channels"), [(5000, 16), (97, 32)])
def test_residuals_write_each_row_where_dest_says(kernel, rows: int, channels: int) -> None:
    """Rows written to ``dest`` (the next block's order) as the kernel goes, and their gradients read back from there:
    the same numbers as the residuals followed by a scatter, under autograd and in inference."""
    torch.manual_seed(rows)
    norm, _, mlp = _pre_norm_layers(channels, 2 * channels)
    proj = torch.nn.Linear(channels, channels)
    x = (torch.randn(rows, channels) * 3 + 1).requires_grad_()
    attended = torch.randn(rows, channels, requires_grad=True)
    dest = torch.randperm(rows)
    inputs = [x, attended, *proj.parameters(), *norm.parameters(), *mlp.parameters()]
    placed = cpu_kernels.residuals(x, attended, proj, norm, mlp, dest)
    expected = torch.zeros(rows, channels).index_copy(0, dest, cpu_kernels.residuals(x, attended, proj, norm, mlp))
    assert torch.equal(placed, expected)
    grad = torch.randn(rows, channels)
    for got, want in zip(torch.autograd.grad(placed, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        assert torch.equal(got, want)
    with torch.inference_mode():
        assert torch.equal(cpu_kernels.residuals(x, attended, proj, norm, mlp, dest), expected)


def test_projection_backward_adds_the_gradient_carried_to_it(kernel) -> None:
    """The tokens norm_linear passes through (the block's residual reads them) send their gradient back to its node,
    whose kernel adds it into dx: the same dx as autograd's sum of the two, and only the kernel's if nothing reads
    them."""
    torch.manual_seed(3)
    found = cpu_kernels.cpu_kernel()
    norm, linear, _ = _pre_norm_layers(16, 32)
    x, grad, carry = torch.randn(100, 16), torch.randn(100, 48), torch.randn(100, 16)
    args = (norm.weight, norm.bias, norm.eps, linear.weight)
    alone = found.norm_linear_backward(x, grad, *args, torch.empty(0))
    carried = found.norm_linear_backward(x, grad, *args, carry)
    torch.testing.assert_close(carried[0], alone[0] + carry, rtol=0, atol=1e-6)
    for got, want in zip(carried[1:], alone[1:]):
        assert torch.equal(got, want)
    x.requires_grad_()
    projection, tokens = cpu_kernels.norm_linear(x, norm, linear)
    assert tokens.grad_fn is projection.grad_fn
    (dx,) = torch.autograd.grad((projection, tokens), x, (grad, carry))
    torch.testing.assert_close(dx, alone[0] + carry, rtol=0, atol=1e-6)
    projection, tokens = cpu_kernels.norm_linear(x, norm, linear)
    (dx,) = torch.autograd.grad(projection, x, grad)
    assert torch.equal(dx, alone[0])


def test_fused_pre_norm_layers_are_what_blocks_run(kernel, monkeypatch) -> None:
    """A block is three kernel calls (projection, attention, residuals), in inference and under autograd, where the
    backwards recompute what the forwards kept in L1. Widths the kernels do not take (60) run ATen's ops with the
    same numbers."""
    calls = []
    real = cpu_kernels.cpu_kernel()

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(cpu_kernels, "cpu_kernel", lambda: Counting())
    from pipeline.networks.blocks.swin import SwinBlock

    block = SwinBlock(16, 2, 8, shifted=False, mlp_ratio=2.0)
    tokens = torch.randn(128, 16)
    with torch.inference_mode():
        block.step(tokens.clone(), block.attn.position_bias(64), None, 64)
    assert calls == ["norm_linear", "window_attention", "residuals"]
    calls.clear()
    tokens.requires_grad_()
    out = block.step(tokens, block.attn.position_bias(64), None, 64)
    assert calls == ["norm_linear", "window_attention", "residuals"]
    calls.clear()
    out.sum().backward()
    assert sorted(calls) == ["norm_linear_backward", "residuals_backward", "window_attention_backward"]
    calls.clear()
    norm, linear, mlp = _pre_norm_layers(60, 120)
    proj = torch.nn.Linear(60, 60)
    x, attended = torch.randn(50, 60), torch.randn(50, 60)
    with torch.inference_mode():
        assert torch.equal(cpu_kernels.norm_linear(x, norm, linear)[0], linear(norm(x)))
        attention_sum = x + proj(attended)
        expected = attention_sum + mlp(norm(attention_sum))
        assert (cpu_kernels.residuals(x.clone(), attended, proj, norm, mlp) - expected).abs().max() < 1e-5
    x.requires_grad_()
    assert (cpu_kernels.residuals(x, attended, proj, norm, mlp) - expected).abs().max() < 1e-5
    assert not {"norm_linear", "residuals"} & set(calls)


def test_fused_pre_norm_layers_refuse_what_they_were_not_built_for(kernel) -> None:
    found = cpu_kernels.cpu_kernel()
    norm, linear, mlp = _pre_norm_layers(32, 64)
    x, attended, proj = torch.randn(8, 32), torch.randn(8, 32), torch.nn.Linear(32, 32)
    layers = (mlp.linear1.weight, mlp.linear1.bias, mlp.linear2.weight, mlp.linear2.bias)
    none = torch.empty(0)
    with pytest.raises(RuntimeError, match="contiguous float32 CPU tokens"):
        found.norm_linear(torch.randn(32, 8).t(), norm.weight, norm.bias, 1e-5, linear.weight, linear.bias, none)
    with pytest.raises(RuntimeError, match="multiples of 16"):
        found.norm_linear(x, norm.weight, norm.bias, 1e-5, torch.randn(20, 32), torch.randn(20), none)
    with pytest.raises(RuntimeError, match="must be contiguous float32 of 96 values"):
        found.norm_linear(x, norm.weight, norm.bias, 1e-5, linear.weight, torch.randn(95), none)
    with pytest.raises(RuntimeError, match="attended and out must be"):
        found.residuals(x, attended[:7], proj.weight, proj.bias, norm.weight, norm.bias, 1e-5, *layers, x, none, False)
    with pytest.raises(RuntimeError, match="norm_weight must be contiguous float32 of 32 values"):
        found.residuals(x, attended, proj.weight, proj.bias, torch.randn(16), norm.bias, 1e-5, *layers, x, none,
                        False)
    with pytest.raises(RuntimeError, match=r"w2 must be contiguous float32 \(32, 64\)"):
        found.residuals(x, attended, proj.weight, proj.bias, norm.weight, norm.bias, 1e-5, *layers[:2],
                        layers[2].t(), layers[3], x, none, False)
    with pytest.raises(RuntimeError, match=r"attended and grad must be \(rows, C\) as x"):
        found.residuals_backward(x, attended, attended[:7], proj.weight, proj.bias, norm.weight, norm.bias, 1e-5,
                                 *layers, none)
    with pytest.raises(RuntimeError, match="dest indices must be rows of the output"):  # a map's rows: x's
        found.residuals(x, attended[:4], proj.weight, proj.bias, norm.weight, norm.bias, 1e-5, *layers, x,
                        torch.arange(4) + 6, True)
    with pytest.raises(RuntimeError, match="x must have attended's channels"):
        narrow = torch.randn(8, 16)
        found.residuals(narrow, attended[:4], proj.weight, proj.bias, norm.weight, norm.bias, 1e-5, *layers, narrow,
                        torch.arange(4), True)
    with pytest.raises(RuntimeError, match="rows of a map need dest, and out a map as x"):
        found.residuals(x, attended[:4], proj.weight, proj.bias, norm.weight, norm.bias, 1e-5, *layers,
                        torch.empty(5, 32), torch.arange(4), True)
    with pytest.raises(RuntimeError, match="dest indices must be rows of the output"):
        found.residuals(x, attended, proj.weight, proj.bias, norm.weight, norm.bias, 1e-5, *layers,
                        torch.empty_like(x), torch.arange(8) + 1, False)
    with pytest.raises(RuntimeError, match="dest must be contiguous int64 of one index per row"):
        found.residuals_backward(x, attended, attended, proj.weight, proj.bias, norm.weight, norm.bias, 1e-5,
                                 *layers, torch.arange(8, dtype=torch.int32))
    with pytest.raises(RuntimeError, match=r"grad must be \(rows, out\)"):
        found.norm_linear_backward(x, torch.randn(8, 95), norm.weight, norm.bias, 1e-5, linear.weight, none)
    with pytest.raises(RuntimeError, match=r"carry must be \(rows, C\) as x"):
        found.norm_linear_backward(x, torch.randn(8, 96), norm.weight, norm.bias, 1e-5, linear.weight, x[:7])
    with pytest.raises(RuntimeError, match="norm_bias must be contiguous float32 of 32 values"):
        found.residuals_backward(x, attended, attended, proj.weight, proj.bias, norm.weight, torch.randn(31), 1e-5,
                                 *layers, none)


def test_a_dispatch_mode_sees_aten_ops_not_the_kernels(kernel) -> None:
    """torch's FLOP counter (like any dispatch mode) cannot see into a kernel call: the blocks run ATen's ops under
    it, so a benchmark counts every multiply of the linear layers."""
    from torch.utils.flop_counter import FlopCounterMode

    linear = torch.nn.Linear(32, 48)
    x = torch.randn(100, 32)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        cpu_kernels.token_linear(x, linear)
    assert counter.get_total_flops() == 2 * 100 * 32 * 48
