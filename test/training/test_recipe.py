"""The fine-tuning recipe: schedule, parameter groups, frozen vision, checked settings."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import get_cosine_schedule_with_warmup

from twinvla_ros.model import TwinVLA, TwinVLAConfig
from twinvla_ros.training.config import TrainConfig
from twinvla_ros.training.recipe import build_optimizer, build_schedule, cosine_with_warmup, freeze_for_training


@given(total=st.integers(1, 400), warmup_ratio=st.floats(0.0, 0.5))
@settings(max_examples=60, deadline=None)
def test_the_schedule_is_transformers_cosine_with_warmup(total, warmup_ratio):
    config = TrainConfig(steps=total, warmup_ratio=warmup_ratio)
    parameter = torch.nn.Parameter(torch.zeros(2, 2))
    ours = build_schedule(torch.optim.SGD([parameter], lr=1.0), config)
    theirs = get_cosine_schedule_with_warmup(torch.optim.SGD([parameter], lr=1.0), config.warmup_steps, total)
    for _ in range(total + 1):           # past the end transformers rises again; training stops there
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], abs=1e-9)
        ours.optimizer.step()
        theirs.optimizer.step()
        ours.step()
        theirs.step()


def test_the_schedule_rises_then_falls_to_zero():
    assert cosine_with_warmup(0, 10, 110) == 0.0
    assert cosine_with_warmup(5, 10, 110) == pytest.approx(0.5)
    assert cosine_with_warmup(10, 10, 110) == pytest.approx(1.0)
    assert cosine_with_warmup(60, 10, 110) == pytest.approx(0.5)
    assert cosine_with_warmup(110, 10, 110) == pytest.approx(0.0, abs=1e-12)


def test_decay_spares_biases_and_norms_and_the_frozen_vision_tower_is_left_out():
    model = TwinVLA.random(TwinVLAConfig.preset("tiny"))
    freeze_for_training(model, freeze_vision=True)
    optimizer = build_optimizer(model, TrainConfig())
    decay, exempt = ({id(p) for p in group["params"]} for group in optimizer.param_groups)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [1e-5, 0.0]
    assert optimizer.defaults["betas"] == (0.95, 0.999) and optimizer.defaults["eps"] == 1e-8
    names = dict(model.named_parameters())
    norms = {f"{module_name}.{name}" for module_name, module in model.named_modules()
             if "Norm" in type(module).__name__ for name, _ in module.named_parameters(recurse=False)}
    assert "norm.weight" in norms and "mlp1.0.weight" in norms
    for name, parameter in names.items():
        if name.startswith("vision_c."):
            assert not parameter.requires_grad and id(parameter) not in decay | exempt, name
            continue
        assert parameter.requires_grad, name
        expected = exempt if (name.endswith(".bias") or name in norms) else decay
        assert id(parameter) in expected, name
    assert id(names["mlp1.1.weight"]) in decay                   # the projector trains
    assert id(names["backbone_l.0.input_layernorm.weight"]) in exempt
    freeze_for_training(model, freeze_vision=False)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps"), ("batch_size", 0, "batch_size"), ("learning_rate", -1.0, "learning_rate"),
    ("learning_rate", math.nan, "learning_rate"), ("warmup_ratio", 1.0, "warmup_ratio"), ("save_every", 0, "save_every"),
    ("proprio_dropout", 1.0, "proprio_dropout"), ("proprio_dropout", -0.1, "proprio_dropout"),
    ("cache_gb", 0.0, "cache_gb"), ("cache_gb", math.inf, "cache_gb"), ("diffusion_batch", 0, "diffusion_batch"),
    ("image_size", 0, "image_size"), ("proprio_noise", -0.01, "proprio_noise"), ("image_shift", -1, "image_shift"),
])
def test_bad_settings_are_refused_with_the_reason(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_proprio_dropout_zeroes_the_state_of_about_that_share_of_samples_and_keeps_the_rest():
    from twinvla_ros.model.processing_twinvla import ModelInputs
    from twinvla_ros.training.trainer import without_some_proprio

    torch.manual_seed(0)
    proprio = torch.rand(2000, 20, dtype=torch.float64) + 0.5           # never zero
    inputs = ModelInputs(None, None, None, None, None, None, proprio)
    dropped = without_some_proprio(inputs, 0.3).proprio
    zeroed = (dropped == 0).all(dim=1)
    assert 0.25 < zeroed.float().mean() < 0.35
    assert torch.equal(dropped[~zeroed], proprio[~zeroed]) and dropped.dtype == proprio.dtype
    assert torch.equal(inputs.proprio, proprio)                          # the batch itself is untouched


def test_proprio_noise_moves_only_the_positions_by_about_that_much_and_leaves_the_batch():
    from twinvla_ros.model import Observation
    from twinvla_ros.robot.bimanual import POSITION, arm_slice
    from twinvla_ros.training.data import Batch
    from twinvla_ros.training.trainer import with_noisy_positions

    torch.manual_seed(0)
    image = np.zeros((8, 8, 3), np.uint8)
    states = np.random.default_rng(0).uniform(-1, 1, (500, 20))
    batch = Batch([Observation("t", image, image, image, state.copy()) for state in states],
                  np.zeros((500, 20, 20)), np.ones((500, 20), bool))
    noisy = with_noisy_positions(batch, 0.005)
    moved = np.stack([o.proprio for o in noisy.observations]) - states
    for side in ("left", "right"):
        positions = moved[:, arm_slice(side)][:, POSITION]
        assert 0.0045 < positions.std() < 0.0055 and abs(positions.mean()) < 0.0005
        rest = np.delete(moved[:, arm_slice(side)], POSITION, axis=1)
        assert not rest.any()                                           # rotation and gripper as they were
    assert np.array_equal(np.stack([o.proprio for o in batch.observations]), states)
    assert noisy.actions is batch.actions


@settings(max_examples=25, deadline=None)
@given(pixels=st.integers(0, 6), seed=st.integers(0, 2**31 - 1))
def test_image_shift_moves_each_image_by_at_most_that_many_pixels(pixels, seed):
    """Each shifted image is the original moved by some (dy, dx) within the bound, the edge
    repeated into the gap; the state, the actions and the batch itself stay as they were."""
    from twinvla_ros.model import Observation
    from twinvla_ros.training.data import Batch
    from twinvla_ros.training.trainer import IMAGE_FIELDS, with_shifted_images

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(3)]
    batch = Batch([Observation("t", *images, np.arange(20.0))], np.zeros((1, 20, 20)), np.ones((1, 20), bool))
    shifted = with_shifted_images(batch, pixels).observations[0]
    for name, original in zip(IMAGE_FIELDS, images):
        image = getattr(shifted, name)
        padded = np.pad(original, ((pixels, pixels), (pixels, pixels), (0, 0)), mode="edge")
        matches = [(dy, dx) for dy in range(-pixels, pixels + 1) for dx in range(-pixels, pixels + 1)
                   if np.array_equal(image, padded[pixels + dy: pixels + dy + 16, pixels + dx: pixels + dx + 20])]
        assert matches, name
    assert np.array_equal(shifted.proprio, np.arange(20.0))
    assert all(np.array_equal(getattr(batch.observations[0], name), original)
               for name, original in zip(IMAGE_FIELDS, images))


def test_image_shifts_cover_the_range_and_differ_between_images():
    from twinvla_ros.model import Observation
    from twinvla_ros.training.data import Batch
    from twinvla_ros.training.trainer import with_shifted_images

    torch.manual_seed(0)
    ramp = np.tile(np.arange(32, dtype=np.uint8)[None, :, None] + 100, (32, 1, 3))    # column index + 100
    batch = Batch([Observation("t", ramp, ramp, ramp, np.zeros(20)) for _ in range(200)],
                  np.zeros((200, 20, 20)), np.ones((200, 20), bool))
    shifts = [int(getattr(o, name)[16, 16, 0]) - 116 for o in with_shifted_images(batch, 3).observations
              for name in ("image_ego", "image_wrist_left", "image_wrist_right")]
    assert set(shifts) == set(range(-3, 4))
