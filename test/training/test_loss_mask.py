"""Padding past an episode's end left out of the flow-matching loss."""
import numpy as np
import pytest
import torch

from twinvla_ros.model import Observation, TwinVLAPolicy


def observations(count):
    rng = np.random.default_rng(0)
    return [Observation(f"task {i}", *(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)),
                        proprio=rng.uniform(-0.2, 0.2, 20)) for i in range(count)]


def loss(model, inputs, target, valid=None, seed=5):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.compute_loss(inputs, target, valid_steps=valid)


def test_the_mask_weights_exactly_the_valid_steps():
    policy = TwinVLAPolicy.tiny(seed=2)
    model = policy.model
    actions = np.random.default_rng(1).uniform(-0.3, 0.3, (2, 20, 20))
    inputs, target = policy.training_inputs(observations(2), actions)
    plain = loss(model, inputs, target)
    assert torch.equal(loss(model, inputs, target, torch.ones(2, 20, dtype=torch.bool)), plain)

    # Sample 0's episode ended after 12 steps: the two masks split the elements between them,
    # so their losses weighted by their element counts add up to the plain one.
    valid = torch.ones(2, 20, dtype=torch.bool)
    valid[0, 12:] = False
    inside, outside = loss(model, inputs, target, valid), loss(model, inputs, target, ~valid)
    counts = valid.sum() * 20, (~valid).sum() * 20
    assert float(inside * counts[0] + outside * counts[1]) == pytest.approx(float(plain * 800), rel=1e-5)

    # Each element keeps its own step's flag through the head's row layout: padding far from
    # anything the model predicts dominates the plain loss and is absent from the masked one.
    padded = target.clone()
    padded[0, 12:] = 1000.0
    assert float(loss(model, inputs, padded)) > 1e4
    assert float(loss(model, inputs, padded, valid)) < 100
