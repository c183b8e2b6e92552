"""Both GAN players stay in sync across processes when wrapped for DistributedDataParallel.

Two CPU processes (gloo) train one step on different data; afterwards every generator and
discriminator parameter (shared blocks included) must be identical on both ranks, which only
holds if every forward went through DDP and the gradients were averaged.
"""

from __future__ import annotations

import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pipeline.engines.players import make_players
from pipeline.losses import DiscriminatorLoss, GeneratorLoss
from pipeline.networks import DCIFGAN


def _step(rank: int, store: str, queue) -> None:
    # A file store belongs to no rank, so both can tear their group down in any order; exiting
    # with gloo's threads still running aborts the process instead.
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2, timeout=timedelta(seconds=60)
    )
    torch.set_num_threads(1)
    torch.manual_seed(0)  # same initial weights on both ranks
    model = DCIFGAN(variant="network4", width=8, num_heads=2, window_size=4, depths=(1, 1, 1))
    streams, d1, d2 = make_players(model, distributed=True, device=torch.device("cpu"))
    g_opt = torch.optim.SGD(model.generator.parameters(), lr=0.1)
    d_opt = torch.optim.SGD(model.discriminator_parameters(), lr=0.1)
    torch.manual_seed(100 + rank)  # different data per rank
    ct, pet = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        f_ct, f_pet = streams(ct, pet)
    DiscriminatorLoss()(ct, pet, f_ct, f_pet, d1, d2)["total"].backward()
    d_opt.step()
    g_opt.zero_grad()
    f_ct, f_pet = streams(ct, pet)
    GeneratorLoss()(ct, pet, f_ct, f_pet, d1, d2)["total"].backward()
    g_opt.step()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        queue.put((bool(torch.allclose(gathered[0], gathered[1], atol=1e-6)), float(flat.abs().sum())))
    dist.barrier()
    # gloo's worker threads free finished work (and the tensors it holds, which takes the GIL) after
    # the call returns; tearing the group down while they still do deadlocks in ~ProcessGroupGloo,
    # which joins them with the GIL held. Sleeping releases the GIL until they are done.
    del gathered, flat
    time.sleep(1.0)
    dist.destroy_process_group()


def test_ddp_players_keep_ranks_identical(tmp_path):
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    store = tmp_path / "store"
    processes = mp.start_processes(_step, args=(str(store), queue), nprocs=2, start_method="spawn", join=False)
    deadline = time.monotonic() + 240
    while not processes.join(timeout=5):
        if time.monotonic() > deadline:
            for process in processes.processes:
                process.kill()
            raise AssertionError("DDP processes did not finish within 240 s")
    in_sync, checksum = queue.get()
    assert in_sync
    assert checksum > 0


def test_single_process_players_are_the_model_itself():
    model = DCIFGAN(variant="network1", width=8, num_heads=2, window_size=4, depths=(1, 1, 1))
    streams, d1, d2 = make_players(model)
    assert d1 is model.d1 and d2 is model.d2 and d1 is d2  # Network1: one discriminator
    assert streams.__self__ is model.generator
