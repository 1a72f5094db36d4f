"""A tiny single-arm checkpoint in the published SingleVLA layout, written from a random twin's
parts (the right stack as the LLM, its readout as the one action token, a text head), for the
tests that build a twin from it. Imported by tests (`import single_arm_checkpoints`)."""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from twinvla_ros.model import TwinVLA, TwinVLAConfig, build_tiny_tokenizer


def single_arm_layout(twin: TwinVLA) -> dict[str, torch.Tensor]:
    """The SingleVLA state dict: the right stack as the LLM, one readout, a text head."""
    out = {}
    for name, tensor in twin.state_dict().items():
        if name.startswith(("backbone_l.", "gates.", "action_token_l")):
            continue
        for twin_prefix, single_prefix in (("vision_c.", "vision_model."), ("embed_tokens_c.", "language_model.model.embed_tokens."),
                                           ("norm.", "language_model.model.norm."), ("backbone_r.", "language_model.model.layers."),
                                           ("decoder_c.", "action_head."), ("action_token_r", "action_token"),
                                           ("mlp1.", "mlp1."), ("embed_arm_state.", "embed_arm_state.")):
            if name.startswith(twin_prefix):
                out[single_prefix + name[len(twin_prefix):]] = tensor.clone()
                break
        else:
            raise AssertionError(f"no single-arm name for {name}")
    out["language_model.lm_head.weight"] = twin.embed_tokens_c.weight.clone()
    return out


def write_single_arm_checkpoint(path: Path, seed: int = 7, with_tokenizer: bool = False):
    """(the twin the parts came from, the single-arm state dict) after writing both files."""
    config = TwinVLAConfig.preset("tiny")
    source = TwinVLA.random(config, seed=seed)
    _, single = config.to_dicts()
    single.update(model_type="TinyVLA", image_start_token_id=config.image_start_token_id,
                  image_end_token_id=config.image_end_token_id)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(single))
    weights = single_arm_layout(source)
    save_file(weights, str(path / "model.safetensors"))
    if with_tokenizer:
        build_tiny_tokenizer().save_pretrained(str(path))
    return source, weights
