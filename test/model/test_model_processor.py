"""Prompt and token layout, tokenizer, image preprocessing, normalization, input validation."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from twinvla_ros.model import Normalizer, TwinVLAConfig, TwinVLAProcessor, build_tiny_tokenizer, load_tokenizer
from twinvla_ros.model.processing_twinvla import EGO, PROPRIO, READOUT, TEXT, WRIST_L, WRIST_R, base_prompt, preprocess_image

REFERENCE_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nYou are a robotic decision-making "
    "assistant.  \n            Given a task and robotic system states (Base, Arm), determine the appropriate action.\n"
    "            What action should the robot take to accomplish {task}?\n            Base State: \n        "
)


def test_prompt_text_is_the_trained_one():
    assert base_prompt("Pick Up the Box") == REFERENCE_PROMPT.format(task="Pick Up the Box")


def test_token_layout(policy):
    proc, cfg, tok = policy.processor, policy.config, policy.tokenizer
    ids, roles, layout = proc.tokens(["Hand over the box"])
    ids, roles = ids[0].tolist(), roles[0].tolist()
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix = enc(REFERENCE_PROMPT.format(task="Hand over the box"))  # not lower-cased at inference
    n = cfg.num_image_tokens
    image = [cfg.image_start_token_id] + [0] * n + [cfg.image_end_token_id]
    shared = prefix + image + enc("\n")
    arm = enc("Arm State: ") + image + [0] + enc("\n") + enc("\n") + enc("Action: ") + [0]
    assert ids == shared + arm + arm
    assert layout.C == len(shared) and layout.S == len(arm)
    assert roles.count(EGO) == roles.count(WRIST_L) == roles.count(WRIST_R) == n == 64
    assert roles.count(PROPRIO) == 2 and roles.count(READOUT) == 2
    C, S = layout.C, layout.S
    assert all(r in (TEXT, EGO) for r in roles[:C])
    for start, cam in ((C, WRIST_L), (C + S, WRIST_R)):
        block = roles[start : start + S]
        first = block.index(cam)
        assert ids[start + first - 1] == cfg.image_start_token_id and ids[start + first + n] == cfg.image_end_token_id
        assert block[first + n + 1] == PROPRIO  # proprio slot right after </img>
        assert block[-1] == READOUT


def test_tiny_tokenizer_is_deterministic_and_round_trips(tmp_path):
    a, b = build_tiny_tokenizer(), build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    cfg = TwinVLAConfig.preset("tiny")
    assert a.convert_tokens_to_ids("<img>") == cfg.image_start_token_id
    assert a.convert_tokens_to_ids("</img>") == cfg.image_end_token_id
    assert len(a) <= cfg.llm["vocab_size"]
    ids = a(REFERENCE_PROMPT, add_special_tokens=False)["input_ids"]
    assert ids[0] == a.convert_tokens_to_ids("<|im_start|>")
    a.save_pretrained(str(tmp_path))
    c = load_tokenizer(tmp_path)
    assert c(REFERENCE_PROMPT, add_special_tokens=False)["input_ids"] == ids


def test_a_checkpoints_tokenizer_loads_without_a_model_type_warning(tmp_path, policy, caplog):
    """In a checkpoint directory AutoTokenizer would read config.json, whose TwinVLA model type
    transformers does not know, and warn on every load; the tokenizer is the same either way."""
    policy.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"]
    with caplog.at_level(logging.WARNING):
        loaded = load_tokenizer(tmp_path)
    assert "to instantiate a model of type" not in caplog.text
    assert loaded(REFERENCE_PROMPT)["input_ids"] == policy.tokenizer(REFERENCE_PROMPT)["input_ids"]


def test_processor_rejects_a_tokenizer_that_does_not_fit():
    cfg = dataclasses.replace(TwinVLAConfig.preset("tiny"), image_start_token_id=151665)
    with pytest.raises(ValueError, match="<img> is id"):
        TwinVLAProcessor(cfg, build_tiny_tokenizer())


def test_image_preprocessing():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    out = preprocess_image(img, 224)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    x = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    expect = (F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)[0] - 0.5) / 0.5
    assert torch.equal(out, expect)
    same = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert torch.equal(preprocess_image(same, 224), (torch.tensor(same, dtype=torch.float32).permute(2, 0, 1) / 255.0 - 0.5) / 0.5)
    # Aspect ratio is not kept: a horizontal stripe pattern stays horizontal after squashing.
    stripes = np.zeros((100, 400, 3), dtype=np.uint8)
    stripes[:50] = 255
    out = preprocess_image(stripes, 224)
    assert out[:, :100].mean() > 0.9 and out[:, 124:].mean() < -0.9


STATS = {
    "ds": {
        "action": {"q01": [-0.2, -0.5, 0.1] + [-1.0] * 6 + [0.0], "q99": [0.6, 0.5, 0.7] + [1.0] * 6 + [1.0], "mask": [True] * 3 + [False] * 7},
        "proprio": {"q01": [-0.1, -0.4, 0.0] + [-1.0] * 6 + [0.0], "q99": [0.5, 0.4, 0.6] + [1.0] * 6 + [1.0], "mask": [True] * 3 + [False] * 7},
    },
    "other": {"action": {"q01": [0.0] * 20, "q99": [1.0] * 20, "mask": [True] * 20}},
}


def test_quantile_normalization_round_trip_and_formula():
    norm = Normalizer(STATS, "ds", "quantile")
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20, 20))
    back = norm.unnormalize_action(norm.normalize_action(a))
    assert np.allclose(back, a, atol=1e-12)
    n = norm.normalize_action(a)
    raw = [i for i in range(20) if i % 10 >= 3]
    assert np.array_equal(n[:, raw], a[:, raw])  # rotation and gripper stay raw
    p = np.r_[0.2, 0.0, 0.3, np.zeros(7), 0.5, 0.4, 0.6, np.zeros(7)]
    q = norm.normalize_proprio(p)
    assert q[0] == (0.2 - -0.1) * 2 / (0.5 - -0.1 + 1e-6) - 1  # the same halves stats for both arms
    assert q[10] == (0.5 - -0.1) * 2 / (0.5 - -0.1 + 1e-6) - 1
    assert norm.normalize_proprio(np.full(20, 9.0))[0] > 1.0  # no clipping at inference
    a32 = a.astype(np.float32)
    out = norm.unnormalize_action(a32)
    assert out.dtype == np.float64  # un-normalization in float64
    full = Normalizer(STATS, "other", "quantile")  # 20-D stats apply to the whole vector
    assert np.allclose(full.unnormalize_action(np.zeros(20)), 0.5, atol=1e-6)
    assert np.array_equal(Normalizer(STATS, "ds", "normal").unnormalize_action(a), a)


def test_unnorm_key_selection():
    with pytest.raises(ValueError, match="unnorm_key"):
        Normalizer(STATS, None, "quantile")
    with pytest.raises(KeyError, match="available"):
        Normalizer(STATS, "nope", "quantile")
    assert Normalizer({"only": STATS["ds"]}, None, "quantile").key == "only"


def test_images_of_different_sizes_work(policy, make_observation):
    small = make_observation(2, sizes=((48, 64), (31, 17), (600, 800)))
    out = policy.predict(small, seed=0)
    assert out.shape == (20, 20) and np.all(np.isfinite(out))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(image_ego=np.zeros((10, 10, 3), dtype=np.float32)), "image_ego must be uint8"),
        (dict(image_wrist_left=np.zeros((10, 10), dtype=np.uint8)), "image_wrist_left must be HxWx3"),
        (dict(image_wrist_right=np.zeros((10, 10, 4), dtype=np.uint8)), "image_wrist_right must be HxWx3"),
        (dict(image_ego=[[1, 2, 3]]), "image_ego must be a numpy array"),
        (dict(proprio=np.zeros(14)), r"proprio must have shape \(20,\)"),
        (dict(proprio=np.r_[np.zeros(19), np.nan]), "proprio must be finite"),
        (dict(proprio=np.r_[np.zeros(19), np.inf]), "proprio must be finite"),
        (dict(instruction=""), "instruction must be a non-empty string"),
        (dict(instruction="   \n"), "instruction must be a non-empty string"),
    ],
)
def test_bad_inputs_raise_clear_errors(policy, obs, change, message):
    bad = dataclasses.replace(obs, **change)
    with pytest.raises(ValueError, match=message):
        policy.validate(bad)
    with pytest.raises(ValueError, match=message):
        policy.predict(bad)
