"""State-dict naming, parameter counts, config files and save/load round trips."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from twinvla_ros.model import CheckpointMismatchError, TwinVLA, TwinVLAConfig, TwinVLAPolicy

LAYER_PARTS = (
    r"self_attn\.(q|k|v)_proj\.(weight|bias)",
    r"self_attn\.o_proj\.weight",
    r"mlp\.(gate|up|down)_proj\.weight",
    r"input_layernorm\.weight",
    r"post_attention_layernorm\.weight",
)
DIT_PARTS = (
    r"x_embedder\.linear\.(weight|bias)",
    r"t_embedder\.mlp\.(0|2)\.(weight|bias)",
    r"z_embedder\.linear\.(weight|bias)",
    r"z_embedder\.uncondition",
    r"positional_embedding",
    r"blocks\.\d+\.attn\.(qkv|proj)\.(weight|bias)",
    r"blocks\.\d+\.mlp\.(fc1|fc2)\.(weight|bias)",
    r"final_layer\.linear\.(weight|bias)",
)
ALLOWED = [
    r"norm\.weight",
    r"embed_tokens_c\.weight",
    *[rf"backbone_(l|r)\.\d+\.{p}" for p in LAYER_PARTS],
    r"vision_c\.vision_model\.(embeddings|encoder|post_layernorm)\..+",
    r"mlp1\.(0|1|3)\.(weight|bias)",
    r"embed_arm_state\.(weight|bias)",
    r"gates\.\d+\.(weight|bias)",
    r"decoder_c\.combine\.(weight|bias)",
    *[rf"decoder_c\.net\.{p}" for p in DIT_PARTS],
    r"action_token_(l|r)",
]


def meta_model(config: TwinVLAConfig) -> TwinVLA:
    with torch.device("meta"):
        return TwinVLA(config)


def test_every_key_follows_the_published_naming(policy):
    keys = list(policy.model.state_dict())
    stray = [k for k in keys if not any(re.fullmatch(p, k) for p in ALLOWED)]
    assert stray == []
    L = policy.config.num_layers
    depth = policy.config.dit_dims[0]
    for i in range(L):
        for side in "lr":
            for part in ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
                         "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
                         "input_layernorm.weight", "post_attention_layernorm.weight"):
                assert f"backbone_{side}.{i}.{part}" in keys
            assert f"backbone_{side}.{i}.self_attn.o_proj.bias" not in keys  # Qwen2: o_proj has no bias
        assert f"gates.{i}.weight" in keys
    for part in ("norm.weight", "embed_tokens_c.weight", "mlp1.0.weight", "mlp1.1.weight", "mlp1.3.weight",
                 "embed_arm_state.weight", "decoder_c.combine.weight", "decoder_c.net.x_embedder.linear.weight",
                 "decoder_c.net.t_embedder.mlp.0.weight", "decoder_c.net.t_embedder.mlp.2.weight",
                 "decoder_c.net.z_embedder.linear.weight", "decoder_c.net.z_embedder.uncondition",
                 "decoder_c.net.positional_embedding", f"decoder_c.net.blocks.{depth - 1}.attn.qkv.weight",
                 f"decoder_c.net.blocks.{depth - 1}.attn.proj.weight", "decoder_c.net.blocks.0.mlp.fc1.weight",
                 "decoder_c.net.blocks.0.mlp.fc2.weight", "decoder_c.net.final_layer.linear.weight",
                 "action_token_l", "action_token_r",
                 "vision_c.vision_model.embeddings.patch_embedding.weight",
                 "vision_c.vision_model.post_layernorm.weight"):
        assert part in keys, part
    assert f"gates.{L}.weight" not in keys
    assert not any("inv_freq" in k or "position_ids" in k or "rotary" in k for k in keys)


def test_eagle2_1b_shapes_and_parameter_count():
    model = meta_model(TwinVLAConfig.preset("eagle2-1b"))
    sd = model.state_dict()
    expect = {
        "embed_tokens_c.weight": (151674, 896),
        "mlp1.0.weight": (4608,),
        "mlp1.1.weight": (896, 4608),
        "mlp1.3.weight": (896, 896),
        "backbone_l.23.self_attn.k_proj.weight": (128, 896),
        "backbone_r.0.mlp.gate_proj.weight": (4864, 896),
        "gates.23.weight": (2, 896),
        "embed_arm_state.weight": (896, 10),
        "decoder_c.combine.weight": (896, 906),
        "decoder_c.net.positional_embedding": (21, 1024),
        "decoder_c.net.z_embedder.uncondition": (1, 896),
        "decoder_c.net.z_embedder.linear.weight": (1024, 896),
        "decoder_c.net.t_embedder.mlp.0.weight": (1024, 256),
        "decoder_c.net.blocks.23.attn.qkv.weight": (3072, 1024),
        "decoder_c.net.final_layer.linear.weight": (10, 1024),
        "vision_c.vision_model.embeddings.patch_embedding.weight": (1152, 3, 14, 14),
        "vision_c.vision_model.embeddings.position_embedding.weight": (1024, 1152),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert "action_token_l" not in sd  # readout_token_as_eos, as published
    assert "gates.24.weight" not in sd and "decoder_c.net.blocks.24.attn.qkv.weight" not in sd
    count = lambda prefix: sum(v.numel() for k, v in sd.items() if k.startswith(prefix))  # noqa: E731
    total = count("")
    assert abs(total - 1.575e9) / 1.575e9 < 0.002, total
    assert abs(count("vision_c.") - 413e6) < 1e6
    assert abs(count("backbone_l.") - 358e6) < 1e6 and count("backbone_l.") == count("backbone_r.")
    assert abs(count("decoder_c.net.") - 305e6) < 2e6


def test_config_round_trip_and_reference_style_json(tmp_path, policy):
    policy.config.save(tmp_path)
    again = TwinVLAConfig.from_pretrained(tmp_path)
    assert again.to_dicts() == policy.config.to_dicts()
    assert json.loads((tmp_path / "config.json").read_text())["share_vision"] is True

    # What the authors' code writes: runtime keys in the sub-configs, the single-arm config nested.
    eagle = TwinVLAConfig.preset("eagle2-1b")
    twin, single = eagle.to_dicts()
    single["llm_config"].update(attn_implementation="flash_attention_2", architectures=["Qwen2ForCausalLM"], torch_dtype="bfloat16")
    single["vision_config"].update(_attn_implementation="flash_attention_2", model_type="siglip_vision_model")
    single["diffusion_batch"] = 32
    twin["singlevla_config"] = single
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "config.json").write_text(json.dumps(twin))
    cfg = TwinVLAConfig.from_pretrained(tmp_path / "nested")
    assert cfg.num_layers == 24 and cfg.dit_dims == (24, 1024, 16) and cfg.num_image_tokens == 256
    assert cfg.diffusion_batch == 16  # the reference's DiTPolicy never receives the config value
    assert "attn_implementation" not in cfg.llm_kwargs()
    meta_model(cfg)  # builds without flash attention

    twin["enable_moe"] = False
    (tmp_path / "nested" / "config.json").write_text(json.dumps(twin))
    with pytest.raises(NotImplementedError, match="enable_moe"):
        TwinVLAConfig.from_pretrained(tmp_path / "nested")


def test_save_load_round_trip_is_bit_identical(tmp_path, policy, obs):
    policy.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "dataset_statistics.json", "tokenizer.json", "singlevla_config"} <= names
    loaded = TwinVLAPolicy.from_pretrained(tmp_path)
    a, b = policy.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    for (name, buf_a), (_, buf_b) in zip(policy.model.named_buffers(), loaded.model.named_buffers()):
        assert torch.equal(buf_a, buf_b), name
    assert np.array_equal(policy.predict(obs, seed=3), loaded.predict(obs, seed=3))


def test_bf16_checkpoint_upcasts_exactly(tmp_path, policy):
    policy.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    # The published dtype layout: bfloat16 except the action head.
    sd = {k: (v if k.startswith("decoder_c.") else v.to(torch.bfloat16)) for k, v in sd.items()}
    save_file(sd, str(tmp_path / "model.safetensors"))
    model = TwinVLA.from_pretrained(tmp_path)
    assert model.dtype == torch.float32 and model.head_dtype == torch.float32
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k].float()), k


def test_sharded_checkpoint_loads(tmp_path, policy):
    policy.model.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    keys = sorted(sd)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: sd[k] for k in part}, str(tmp_path / name))
        weight_map.update({k: name for k in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model = TwinVLA.from_pretrained(tmp_path)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


def test_mismatched_checkpoint_lists_every_problem(tmp_path, policy):
    policy.model.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    del sd["gates.0.weight"], sd["decoder_c.combine.bias"]
    sd["backbone_l.0.self_attn.o_proj.bias"] = torch.zeros(64)
    sd["embed_arm_state.weight"] = torch.zeros(64, 11)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError) as info:
        TwinVLA.from_pretrained(tmp_path)
    msg = str(info.value)
    for text in ("missing (2)", "gates.0.weight", "decoder_c.combine.bias", "unexpected (1)",
                 "backbone_l.0.self_attn.o_proj.bias", "shape mismatch (1)", "embed_arm_state.weight: checkpoint (64, 11) vs model (64, 10)"):
        assert text in msg
