"""The twin built from a single-arm checkpoint in the published SingleVLA layout (a tiny one,
written from a random twin's parts: single_arm_checkpoints.py)."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from single_arm_checkpoints import write_single_arm_checkpoint
from twinvla_ros.model import (CheckpointMismatchError, Observation, TwinVLA, TwinVLAConfig, TwinVLAPolicy,
                               build_tiny_tokenizer, default_statistics)
from twinvla_ros.model.single_arm import is_single_arm_checkpoint, twin_from_single_arm


@pytest.fixture
def single_arm(tmp_path):
    source, weights = write_single_arm_checkpoint(tmp_path)
    return tmp_path, source, weights


def test_the_twin_copies_the_single_arm_into_both_stacks_and_starts_fresh_gates(single_arm):
    path, source, weights = single_arm
    assert is_single_arm_checkpoint(path)
    twin = twin_from_single_arm(path, seed=3)
    assert twin.config.model_type == "TinyTwinVLA" and twin.config.action_len == 20
    state = twin.state_dict()
    layers = source.config.llm["num_hidden_layers"]
    for i in range(layers):
        for part in ("self_attn.q_proj.weight", "self_attn.q_proj.bias", "mlp.down_proj.weight", "input_layernorm.weight"):
            single = weights[f"language_model.model.layers.{i}.{part}"]
            assert torch.equal(state[f"backbone_l.{i}.{part}"], single) and torch.equal(state[f"backbone_r.{i}.{part}"], single)
    assert torch.equal(state["action_token_l"], weights["action_token"]) and torch.equal(state["action_token_r"], weights["action_token"])
    for name in ("vision_c.vision_model.embeddings.patch_embedding.weight", "decoder_c.net.x_embedder.linear.weight",
                 "embed_tokens_c.weight", "norm.weight", "mlp1.1.weight", "embed_arm_state.weight"):
        assert torch.equal(state[name], source.state_dict()[name]), name
    fresh = TwinVLA.random(twin.config, seed=3).state_dict()
    for i in range(layers):
        assert torch.equal(state[f"gates.{i}.weight"], fresh[f"gates.{i}.weight"])
        assert not torch.equal(state[f"gates.{i}.weight"], source.state_dict()[f"gates.{i}.weight"])
    policy = TwinVLAPolicy(twin, build_tiny_tokenizer(), {"anubis_sim": default_statistics()})
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3))
    chunk = policy.predict(Observation("lift the box", *images, proprio=np.zeros(20)), seed=0)
    assert chunk.shape == (20, 20) and np.isfinite(chunk).all()


def test_a_twin_checkpoint_is_not_taken_for_a_single_arm_one(tmp_path):
    TwinVLA.random(TwinVLAConfig.preset("tiny")).save_pretrained(tmp_path)
    assert not is_single_arm_checkpoint(tmp_path)


def test_a_single_arm_checkpoint_that_lacks_a_layer_is_refused_naming_it(single_arm):
    path, _, weights = single_arm
    kept = {k: v for k, v in weights.items() if not k.startswith("language_model.model.layers.1.")}
    save_file(kept, str(path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"nothing for \d+ twin parameters: backbone_l.1."):
        twin_from_single_arm(path)
