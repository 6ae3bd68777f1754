"""MLP helpers: skip connection wiring, trunc_exp forward/backward, activations."""

import pytest
import torch

from physinv.core.field import MLP, activation, trunc_exp


def test_trunc_exp_forward_and_clamped_gradient():
    x = torch.tensor([0.0, 1.0, 20.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    assert torch.allclose(y, torch.exp(x.detach()))
    y.sum().backward()
    assert torch.allclose(x.grad, torch.exp(torch.tensor([0.0, 1.0, 15.0], dtype=torch.float64)))
    xs = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(trunc_exp, (xs,))


def test_mlp_skip_feeds_input_again():
    mlp = MLP(10, 4, width=32, depth=8, skips=(4,))
    assert mlp.hidden[4].in_features == 32 + 10 and mlp.hidden[3].in_features == 32
    y, h = mlp(torch.randn(3, 10), return_hidden=True)
    assert y.shape == (3, 4) and h.shape == (3, 32)
    # the output depends on the input through the skip even if the first 4 layers are cut
    with torch.no_grad():
        mlp.hidden[3].weight.zero_()
        mlp.hidden[3].bias.zero_()
    a, b = torch.randn(1, 10), torch.randn(1, 10)
    assert not torch.allclose(mlp(a), mlp(b))


def test_output_activations():
    mlp = MLP(3, 2, width=8, depth=1, output_activation="softplus")
    assert (mlp(torch.randn(100, 3) * 10) > 0).all()
    assert activation("relu")(torch.tensor(-1.0)) == 0
    with pytest.raises(ValueError, match="unknown activation"):
        activation("gelu2")


def test_mlp_gradcheck_float64():
    mlp = MLP(4, 3, width=8, depth=3, skips=(2,), hidden_activation="softplus").double()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mlp, (x,))
