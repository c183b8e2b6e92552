import torch
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandSpatialCropd
from monai.utils import set_determinism

from pipeline.handlers import EpochSeed

EPOCHS = 3


def _epochs(seed: EpochSeed | None, resume_at: int = 0) -> dict[int, list[torch.Tensor]]:
    """The batches of each epoch a fresh process draws (start-up seeding as train.json's), from ``resume_at`` on."""
    set_determinism(0)
    items = [{"img": torch.arange(64.0).reshape(1, 8, 8) + 100 * i} for i in range(6)]
    transform = Compose([RandSpatialCropd("img", roi_size=(4, 4), random_size=False),
                         RandFlipd("img", prob=0.5, spatial_axis=0)])
    loader = DataLoader(Dataset(items, transform), batch_size=2, shuffle=True)
    drawn: dict[int, list[torch.Tensor]] = {}
    engine = Engine(lambda e, batch: drawn.setdefault(e.state.epoch, []).append(batch["img"]))
    if seed is not None:
        seed.attach(engine)
    engine.load_state_dict({"epoch": resume_at, "max_epochs": EPOCHS, "epoch_length": len(loader)})
    engine.run(loader)
    return {epoch: torch.stack(batches) for epoch, batches in drawn.items()}


def test_a_resumed_run_draws_the_epochs_the_uninterrupted_run_drew():
    whole = _epochs(EpochSeed(7))
    resumed = _epochs(EpochSeed(7), resume_at=EPOCHS - 1)
    assert list(resumed) == [EPOCHS]
    torch.testing.assert_close(resumed[EPOCHS], whole[EPOCHS], rtol=0, atol=0)
    assert not torch.equal(whole[EPOCHS], whole[1])  # not the first epoch's crops and order again


def test_without_it_a_resumed_run_replays_the_first_epoch():
    """The defect the handler is there for: start-up seeding alone gives a resumed run epoch 1's batches."""
    whole, resumed = _epochs(None), _epochs(None, resume_at=EPOCHS - 1)
    assert torch.equal(resumed[EPOCHS], whole[1])


def test_seeds_differ_by_run_seed_and_epoch():
    seeds = {EpochSeed(run).epoch_seed(epoch) for run in range(3) for epoch in range(1, 4)}
    assert len(seeds) == 9 and all(0 <= seed < 2**31 for seed in seeds)
