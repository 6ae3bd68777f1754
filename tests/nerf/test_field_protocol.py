"""The field protocol on a trained NeRF: a new head renders without touching the renderer, and a
second field trained along the frozen NeRF's samples and weights learns an instance split."""

import torch
import torch.nn.functional as F

from physinv.core.encoding import positional_encoding
from physinv.core.field import MLP
from physinv.core.volume import composite_samples
from physinv.io.dataset import load_views
from physinv.nerf.api import load_run
from physinv.nerf.train import sample_rays


def test_a_new_head_renders_through_the_protocol(ngp_run, tiny_scene):
    run = load_run(ngp_run[0])
    views = load_views(tiny_scene, "test")
    o, d, _, _ = sample_rays(views, 512, torch.Generator().manual_seed(0))
    colour = torch.tensor([0.2, 0.5, 0.9])

    def constant_colour(points, dirs, field_out):
        return {"paint": colour.expand(points.shape[0], 3), "height": points[:, 2]}

    plain = run.render_rays(o, d)
    out = run.render_rays(o, d, extra_features=constant_colour)
    assert set(out) >= {"rgb", "depth", "opacity", "paint", "height"}
    # a constant per-sample feature composites to opacity x constant (no background is blended into it)
    assert torch.allclose(out["paint"], out["opacity"].unsqueeze(-1) * colour, atol=1e-6)
    assert torch.equal(out["rgb"], plain["rgb"]) and torch.equal(out["depth"], plain["depth"])
    assert (out["opacity"] > 0.5).any() and (out["opacity"] < 0.05).any()  # hits and misses in the batch
    # the expected height of the surface point lies inside the scene box where the ray hits
    hit = out["opacity"] > 0.95
    height = out["height"][hit] / out["opacity"][hit]
    assert ((height > run.aabb[0, 2] - 1e-4) & (height < run.aabb[1, 2] + 1e-4)).all()
    image = run.render_image(views.c2w[0], views.intrinsics[0], views.width, views.height, extra_features=constant_colour)
    assert image["paint"].shape == (views.height, views.width, 3)


def test_ray_samples_match_the_renderer(ngp_run, tiny_scene):
    run = load_run(ngp_run[0])
    views = load_views(tiny_scene, "test")
    o, d, _, _ = sample_rays(views, 256, torch.Generator().manual_seed(1))
    along = run.ray_samples(o, d)
    rendered = run.render_rays(o, d)
    assert along["weights"].shape == along["sigma"].shape == (len(along["samples"]),)
    assert along["geo_feature"].shape == (len(along["samples"]), run.geo_feature_dim)
    # the same field read at the sample points directly
    at_points = run.geometry(along["points"])
    assert torch.allclose(at_points["geo_feature"], along["geo_feature"], atol=1e-6)
    assert torch.allclose(at_points["sigma"], run.density(along["points"]), atol=1e-6)
    assert not along["weights"].requires_grad
    assert torch.allclose(along["opacity"], rendered["opacity"], atol=1e-5)
    assert torch.allclose(along["depth"], rendered["depth"], atol=1e-4)
    # a unit per-sample feature composited with the frozen weights is the opacity
    ones = composite_samples(along["weights"], along["samples"], {"one": torch.ones(len(along["samples"]))})["one"]
    assert torch.allclose(ones, rendered["opacity"], atol=1e-5)
    with_grad = run.ray_samples(o, d, grad=True)
    with_grad["weights"].sum().backward()
    assert run.model.field.density_net.out.weight.grad.abs().sum() > 0


def _instance_split(views):
    """Per-pixel labels of a two-object split: 0 background, 1 the scene's instance 1, 2 every other object."""
    ids = views.maps["instance"]
    return torch.where(ids == 0, 0, torch.where(ids == 1, 1, 2))


def _pixel_rays(views, stride: int = 1):
    """Rays (R, 3) through every ``stride``-th pixel (rows and columns) of every view, view-major."""
    from physinv.core.camera import image_rays

    rays = [image_rays(views.c2w[i], views.intrinsics[i], views.width, views.height) for i in range(len(views))]
    return tuple(torch.cat([r[k][::stride, ::stride].reshape(-1, 3) for r in rays]) for k in (0, 1))


def test_an_instance_field_learns_a_two_object_split_along_a_frozen_nerf(ngp_run, tiny_scene):
    """Instance-NeRF's construction on the protocol: class probabilities of a small field at the
    frozen NeRF's samples, composited with its weights, the rest of each ray's weight going to the
    background class; trained on the training views, scored on the held-out views."""
    torch.manual_seed(0)
    run = load_run(ngp_run[0])
    train_views = load_views(tiny_scene, "train", maps=("instance",))
    test_views = load_views(tiny_scene, "test", maps=("instance",))
    head = MLP(3 * 9, 3, width=32, depth=2)
    lo, hi = run.aabb[0], run.aabb[1]

    def frozen_samples(views, stride):
        o, d = _pixel_rays(views, stride)
        along = run.ray_samples(o, d)  # frozen: no gradient to the NeRF
        keep = along["weights"] > 1e-4  # samples that cannot change a pixel are not worth a head evaluation
        return along["samples"].select(keep), along["weights"][keep], along["points"][keep], along["opacity"]

    def class_probabilities(samples, weights, points, opacity):
        logits = head(positional_encoding(2 * (points - lo) / (hi - lo) - 1, 4))
        probs = composite_samples(weights, samples, {"p": logits.softmax(-1)})["p"]
        background = torch.zeros_like(probs)
        background[:, 0] = 1.0 - opacity
        return probs + background  # (R, 3), rows sum to 1

    # every other pixel of the training views (a quarter of the rays) is plenty for 3 classes
    train_samples, test_samples = frozen_samples(train_views, 2), frozen_samples(test_views, 1)
    labels_train = _instance_split(train_views)[:, ::2, ::2].reshape(-1)
    labels_test = _instance_split(test_views).reshape(-1)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(100):
        loss = F.nll_loss(class_probabilities(*train_samples).clamp(min=1e-6).log(), labels_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = class_probabilities(*test_samples).argmax(-1)
    objects = labels_test > 0
    accuracy = float((predicted[objects] == labels_test[objects]).float().mean())
    majority = float(max((labels_test[objects] == k).float().mean() for k in (1, 2)))
    # held-out views: the object pixels are split far better than by naming the larger class everywhere
    assert accuracy > 0.85 and accuracy > majority + 0.12, (accuracy, majority)
    assert float((predicted == labels_test).float().mean()) > 0.9
