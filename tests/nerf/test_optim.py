"""instant-ngp's Adam: sparse table steps leave untouched rows alone and match dense Adam on the
first step; per-row bias correction; L2 on the network weights only; resume of its state."""

import torch

from physinv.core.encoding import HashGridEncoding
from physinv.nerf.optim import InstantNGPAdam


def _encoding(sparse: bool):
    torch.manual_seed(0)
    return HashGridEncoding(n_levels=3, n_features=2, log2_table_size=10, base_resolution=4, finest_resolution=64, sparse_grad=sparse)


def test_sparse_step_leaves_untouched_rows_and_matches_dense_adam_on_first_step():
    dense = _encoding(False)
    sparse = _encoding(True)
    sparse.load_state_dict(dense.state_dict())
    before = [t.detach().clone() for t in sparse.tables]
    x = torch.rand(20, 3)  # 20 points touch at most 160 of the 1024 rows of each hashed level
    w = torch.randn(20, dense.out_dim)
    (dense(x) * w).sum().backward()
    (sparse(x) * w).sum().backward()
    ref = torch.optim.Adam(dense.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    opt = InstantNGPAdam([{"params": list(sparse.parameters()), "sparse": True}], lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    ref.step()
    opt.step()
    assert not all(sparse.dense) and any(sparse.dense)
    for t_before, t_dense, t_sparse in zip(before, dense.tables, sparse.tables):
        grad = t_dense.grad
        touched = grad.ne(0).any(-1)
        assert 0 < int(touched.sum()) < grad.shape[0]
        # untouched rows: exactly unchanged (dense Adam would move them too from the second step on)
        assert torch.equal(t_sparse.detach()[~touched], t_before[~touched])
        # touched rows: Adam's first step, lr * sign(g)
        assert torch.allclose(t_sparse.detach()[touched], t_dense.detach()[touched], rtol=0, atol=1e-7)
        assert torch.allclose((t_sparse.detach() - t_before)[touched].abs().max(), torch.tensor(1e-2), atol=1e-6)


def test_row_first_touched_later_takes_a_full_first_step():
    # per-row step counts (tiny-cuda-nn): a row seen for the first time at step 5 moves by lr * sign(g)
    table = torch.nn.Parameter(torch.zeros(8, 2))
    opt = InstantNGPAdam([{"params": [table], "sparse": True}], lr=0.1)
    for step in range(5):
        rows = torch.tensor([0]) if step < 4 else torch.tensor([0, 5])
        table.grad = torch.sparse_coo_tensor(rows[None], torch.ones(len(rows), 2), (8, 2), check_invariants=True)
        opt.step()
    assert torch.allclose(table.detach()[5], torch.full((2,), -0.1), atol=1e-6)
    assert opt.state[table]["step"].tolist() == [5, 0, 0, 0, 0, 1, 0, 0]
    assert torch.equal(table.detach()[[1, 2, 3, 4, 6, 7]], torch.zeros(6, 2))


def test_exactly_zero_gradient_rows_are_skipped_and_l2_only_where_asked():
    table = torch.nn.Parameter(torch.ones(4, 2))
    weight = torch.nn.Parameter(torch.ones(3, 3))
    opt = InstantNGPAdam([{"params": [weight], "weight_decay": 1e-6}, {"params": [table], "sparse": True}], lr=1e-2)
    # a coalesced row whose gradient sums to exactly 0 is skipped; a dense table gradient works too
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 1, 2]]), torch.tensor([[1.0, 1.0], [-1.0, -1.0], [2.0, 0.0]]), (4, 2), check_invariants=True)
    weight.grad = torch.zeros(3, 3)
    opt.step()
    assert torch.equal(table.detach()[[0, 1, 3]], torch.ones(3, 2))
    assert table.detach()[2, 0] < 1.0
    # zero loss gradient: the L2 term alone gives Adam's first step lr * sign(1e-6 * w) = lr
    assert torch.allclose(weight.detach(), torch.full((3, 3), 1.0 - 1e-2), atol=1e-6)
    table.grad = torch.zeros(4, 2)
    table.grad[3] = 1.0
    opt.step()
    assert opt.state[table]["step"].tolist() == [0, 0, 1, 1]


def test_state_dict_round_trip_continues_identically():
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(16, 2, generator=gen)
    grads = []
    for _ in range(6):
        rows = torch.randint(0, 16, (5,), generator=gen)
        grads.append(torch.sparse_coo_tensor(rows[None], torch.randn(5, 2, generator=gen), (16, 2), check_invariants=True))

    def steps(table, opt, gs):
        for g in gs:
            table.grad = g
            opt.step()

    full = torch.nn.Parameter(start.clone())
    steps(full, InstantNGPAdam([{"params": [full], "sparse": True}], lr=1e-2), grads)
    first = torch.nn.Parameter(start.clone())
    opt = InstantNGPAdam([{"params": [first], "sparse": True}], lr=1e-2)
    steps(first, opt, grads[:3])
    second = torch.nn.Parameter(first.detach().clone())
    opt2 = InstantNGPAdam([{"params": [second], "sparse": True}], lr=1e-2)
    opt2.load_state_dict(opt.state_dict())
    steps(second, opt2, grads[3:])
    assert torch.equal(second.detach(), full.detach())


def test_hash_decay_groups_apply_zipnerfs_normalised_loss_gradient():
    """Each level's L2 coefficient times its table equals the gradient of
    hash_decay * mean over levels of mean(V_l^2) (Zip-NeRF), in the dense and the sparse optimiser."""
    from physinv.nerf.config import NerfConfig, resolve
    from physinv.nerf.models import build_model
    from physinv.nerf.train import build_optimizer

    for sparse in (False, True):
        cfg = resolve(NerfConfig(method="ngp", levels=4, log2_table_size=10, finest_resolution=64, hash_decay=0.3, sparse_grad=sparse), "cpu")
        model = build_model(cfg, torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
        tables = list(model.field.encoding.parameters())
        loss = 0.3 * torch.stack([t.pow(2).mean() for t in tables]).mean()
        grads = torch.autograd.grad(loss, tables)
        opt = build_optimizer(model, cfg)
        decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        for table, grad in zip(tables, grads):
            assert torch.allclose(decay[id(table)] * table.detach(), grad, rtol=1e-5, atol=0)
        # the network's parameters keep their own L2 (weights) or none (biases): not the hash decay
        assert {decay[id(p)] for p in model.parameters() if id(p) not in {id(t) for t in tables}} <= {0.0, cfg.mlp_weight_decay}
