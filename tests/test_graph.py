"""The pruning engine: groups, physical removal vs masking, rewinding, masks only shrinking."""

import copy
import random

import torch

from hwprune.imp import Ticket, masks_for_widths, rewind, starting_point
from hwprune.prune import graph
from hwprune.prune.masks import Masks


def _random_masks(model, example, seed=0, multiple=8):
    groups = graph.channel_groups(model, example)
    rng = random.Random(seed)
    dense = {g.name: g.width for g in groups}
    kept = {g: sorted(rng.sample(range(w), max(1, min(w, multiple * rng.randint(1, max(1, w // multiple))) - 1)))
            for g, w in dense.items()}
    return dense, Masks.from_kept(dense, kept)


def test_output_layer_is_never_pruned(cnn, mobile, example):
    assert "classifier" not in [g.name for g in graph.channel_groups(cnn, example)]
    assert "classifier" not in [g.name for g in graph.channel_groups(mobile, example)]


def test_groups_couple_residual_and_depthwise(mobile, example):
    groups = {g.name: g for g in graph.channel_groups(mobile, example)}
    residual = groups["features.6.block.2.0"]  # the 64-channel stream shared by two inverted residuals
    assert {"features.5.block.2.0", "features.6.block.2.0", "features.7.0"} <= set(residual.members)
    depthwise = groups["features.2.block.1.0"]
    assert {"features.2.block.0.0", "features.2.block.1.0", "features.2.block.2.0"} <= set(depthwise.members)
    # the concat branches stay separate groups feeding one consumer
    assert "features.5.block.0.0" in groups["features.4.a.0"].members
    assert "features.5.block.0.0" in groups["features.4.b.0"].members


def test_slimmed_model_computes_what_the_masked_one_does(any_model, example):
    dense, masks = _random_masks(any_model, example)
    slim = graph.slim(any_model, example, Masks.full(dense), masks)
    masked = graph.zero_pruned(any_model, example, masks)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(slim(x), masked(x), atol=1e-5)
        assert not torch.allclose(any_model(x), masked(x), atol=1e-3)  # pruning really changed something
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in any_model.parameters())


def test_rewound_survivors_equal_theta_k_exactly(cnn, example):
    theta_k = cnn
    dense, masks = _random_masks(cnn, example, seed=3)
    rewound = rewind(theta_k, masks, example, ())
    first = dict(masks.kept)["features.0"]
    second = dict(masks.kept)["features.3"]
    w = theta_k.features[3].weight
    assert torch.equal(rewound.features[3].weight, w[list(second)][:, list(first)])
    assert torch.equal(rewound.features[1].running_var, theta_k.features[1].running_var[list(first)])
    assert torch.equal(rewound.classifier.weight, theta_k.classifier.weight[:, list(dict(masks.kept)["features.14"])])


def test_rounds_start_from_theta_k_or_from_the_trained_survivors(cnn, example):
    """Weight rewinding starts a round at θ_k; learning-rate rewinding at the ticket's trained values."""
    theta_k = copy.deepcopy(cnn)
    with torch.no_grad():
        for p in theta_k.parameters():
            p.mul_(0.5)
    dense, masks = _random_masks(cnn, example, seed=5)
    ticket = Ticket(Masks.full(dense), cnn)
    kept_in, kept_out = dict(masks.kept)["features.0"], dict(masks.kept)["features.3"]
    for mode, source in (("weights", theta_k), ("lr", cnn)):
        start = starting_point(mode, ticket, masks, theta_k, example, ())
        assert torch.equal(start.features[3].weight, source.features[3].weight[list(kept_out)][:, list(kept_in)])


def test_masks_only_shrink_across_rounds(any_model, example):
    dense = {g.name: g.width for g in graph.channel_groups(any_model, example)}
    ticket = Ticket(Masks.full(dense), any_model)
    previous = ticket.masks
    for fraction in (0.75, 0.5, 0.25):
        widths = {g: max(1, int(w * fraction)) for g, w in dense.items()}
        masks = masks_for_widths(ticket, widths, example, ())
        assert masks.is_within(previous) and masks.widths() == widths
        ticket = Ticket(masks, graph.slim(ticket.model, example, ticket.masks, masks))
        previous = masks


def test_magnitude_keeps_the_strongest_channels(cnn, example):
    with torch.no_grad():
        cnn.features[0].weight.mul_(0.01)
        cnn.features[0].weight[5].fill_(1.0)
    dense = {g.name: g.width for g in graph.channel_groups(cnn, example)}
    masks = masks_for_widths(Ticket(Masks.full(dense), cnn), {**dense, "features.0": 1}, example, ())
    assert masks.kept_of("features.0") == (5,)


def test_rewind_fraction_zero_rewinds_to_the_original_initialisation(fashion_dir):
    """θ_0 (Frankle & Carbin 2019): with rewind_fraction = 0 the rewind point is the seeded initial network,
    exactly, and a rewound ticket's survivors are its slices."""
    from hwprune.config import ImpConfig, ProjectConfig, TrainConfig
    from hwprune.dense import build_model, train_dense
    from hwprune.progress import NullProgress
    config = ProjectConfig(train=TrainConfig(epochs=1, batch_size=64), imp=ImpConfig(rewind="weights",
                                                                                      rewind_fraction=0.0))
    dense = train_dense(config, 1, NullProgress(), data_limit=256)
    theta_0, example = build_model(config, 1)
    assert dense.rewind_at == 0
    for (name, a), b in zip(theta_0.state_dict().items(), dense.theta_k.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(dense.model.features[0].weight, theta_0.features[0].weight)  # training moved it
    masks = Masks.from_kept(dense.widths, {g: list(range(0, w, 2)) for g, w in dense.widths.items()})
    rewound = rewind(dense.theta_k, masks, example, ())
    assert torch.equal(rewound.features[0].weight, theta_0.features[0].weight[0::2])
