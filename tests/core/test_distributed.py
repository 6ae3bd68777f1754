"""core.distributed on two Gloo ranks: global-batch BatchNorm and DDP give one process's gradients,
the sampler's batches cover the one-process batches, collectives, and the bad-input messages."""

from __future__ import annotations

import torch
from torch import nn

from physinv.core import distributed
from physinv.errors import PhysinvError

torch.set_num_threads(1)


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 1))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 2, 5, 5, generator=g) * 3 + 1, torch.randn(8, 1, generator=g)


def _two_rank_checks(out):
    torch.set_num_threads(1)
    dev = distributed.setup(torch.device("cpu"))
    r = distributed.rank()
    model = distributed.sync_batchnorm(_net(), dev)
    assert isinstance(model[1], distributed.GlobalBatchNorm)
    net = distributed.ddp(model, dev)
    x, y = _batch()
    loss = nn.functional.mse_loss(net(distributed.rank_slice(x)), distributed.rank_slice(y))  # mean over this rank's 4
    loss.backward()
    batches = [distributed.epoch_batches(10, 2, epoch, seed=5) for epoch in (0, 1)]
    try:
        distributed.rank_items(1, "shards", "or a smaller --batch")
        too_many = ""
    except PhysinvError as err:
        too_many = str(err)
    torch.save({
        "grads": {k: p.grad for k, p in model.named_parameters()},
        "state": model.state_dict(),
        "batches": batches,
        "mean": distributed.mean_over_ranks({"a": float(r), "b": 2.0}),
        "any": distributed.any_rank(r == 1, False),
        "items": list(distributed.rank_items(5)),
        "too_many": too_many,
    }, out / f"rank{r}.pt")


def test_two_ranks_compute_one_process_batch(ranks, tmp_path):
    """Per-rank batch 4 on 2 ranks == batch 8 alone: gradients (DDP mean, BatchNorm over the global
    batch, differentiated through the all-reduce) and running statistics, to float tolerance."""
    assert ranks.run(_two_rank_checks, 2, tmp_path) == [0, 0]
    model = _net()
    x, y = _batch()
    nn.functional.mse_loss(model(x), y).backward()
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for r in res:
        for k, p in model.named_parameters():
            torch.testing.assert_close(r["grads"][k], p.grad, rtol=1e-5, atol=1e-6)
        for k, v in model.state_dict().items():  # plain BatchNorm keys: the checkpoint loads alone
            torch.testing.assert_close(r["state"][k], v, rtol=1e-5, atol=1e-6)
        assert r["mean"] == {"a": 0.5, "b": 2.0} and r["any"] == (True, False)
        assert r["too_many"] == "--nproc-per-node: 2 processes for 1 shards; use at most 1 processes (or a smaller --batch)"
    assert res[0]["items"] == [0, 2, 4] and res[1]["items"] == [1, 3]
    # DistributedSampler with its epoch advanced: each step's union over ranks is one process's batch of 4,
    # the epochs differ, and only whole global batches are used (10 // 4 = 2 steps)
    for epoch in (0, 1):
        alone = _sampler_batches(epoch)
        assert len(alone) == 2 and all(len(b) == 2 for b in res[0]["batches"][epoch])
        for step, batch in enumerate(alone):
            pair = torch.stack([res[0]["batches"][epoch][step], res[1]["batches"][epoch][step]], 1).reshape(-1)
            assert pair.tolist() == batch.tolist()
    assert _sampler_batches(0)[0].tolist() != _sampler_batches(1)[0].tolist()


def _sampler_batches(epoch: int) -> list[torch.Tensor]:
    return distributed.epoch_batches(10, 4, epoch, seed=5)  # world of one here


def test_alone_nothing_communicates():
    dev = distributed.setup(torch.device("cpu"))
    assert dev == torch.device("cpu") and distributed.world_size() == 1 and distributed.is_main()
    model = _net()
    assert distributed.sync_batchnorm(model, dev) is model and distributed.ddp(model, dev) is model
    assert distributed.mean_over_ranks({"loss": torch.tensor(2.5)}) == {"loss": 2.5}
