"""The twin built from a single-arm checkpoint (SingleVLA, published as `jellyho/TwinVLA`:
pretrained on ~800 h of Open X-Embodiment), as the paper starts fine-tuning.

The single-arm checkpoint is one directory: `config.json` (the single-arm config: model_type
such as "Eagle2_1BVLA", llm_config, vision_config, dit_size, action_len, ...) and safetensors
with the prefixes

  vision_model.vision_model.        -> vision_c.vision_model.       (shared)
  mlp1.                             -> mlp1.                        (shared projector)
  language_model.model.embed_tokens.-> embed_tokens_c.              (shared embeddings)
  language_model.model.norm.        -> norm.
  language_model.model.layers.{i}.  -> backbone_l.{i}. and backbone_r.{i}.   (the LLM twice)
  embed_arm_state.                  -> embed_arm_state.
  action_head.                      -> decoder_c.                   (shared action head)
  action_token                      -> action_token_l and action_token_r
  language_model.lm_head.           -> dropped (the action model never decodes text)

and the twin's MoE gates (`gates.{i}`) are new: they are initialised as a fresh model's are,
from `seed`.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from .configuration_twinvla import TwinVLAConfig
from .modeling_twinvla import CheckpointMismatchError, TwinVLA, _checkpoint_files

_RENAMED_PREFIXES = (
    ("vision_model.", "vision_c."),
    ("mlp1.", "mlp1."),
    ("language_model.model.embed_tokens.", "embed_tokens_c."),
    ("language_model.model.norm.", "norm."),
    ("embed_arm_state.", "embed_arm_state."),
    ("action_head.", "decoder_c."),
)
_LAYERS = "language_model.model.layers."
_DROPPED = ("language_model.lm_head.",)


def is_single_arm_checkpoint(path: str | Path) -> bool:
    """A single-arm config.json holds the sizes itself (llm_config, vision_config); a twin's
    keeps them in singlevla_config/."""
    path = Path(path)
    config = path / "config.json"
    if not config.is_file() or (path / "singlevla_config").is_dir():
        return False
    single = json.loads(config.read_text())
    return "llm_config" in single and "vision_config" in single and "singlevla_config" not in single


def twin_names(single_name: str) -> list[str]:
    """The twin parameters a single-arm parameter initialises ([] for the dropped ones)."""
    if single_name.startswith(_DROPPED):
        return []
    if single_name.startswith(_LAYERS):
        rest = single_name[len(_LAYERS):]
        return [f"backbone_l.{rest}", f"backbone_r.{rest}"]
    if single_name == "action_token":
        return ["action_token_l", "action_token_r"]
    for old, new in _RENAMED_PREFIXES:
        if single_name.startswith(old):
            return [new + single_name[len(old):]]
    raise CheckpointMismatchError(f"single-arm parameter {single_name!r} has no place in the twin")


def twin_config_from_single(single: dict) -> TwinVLAConfig:
    single_type = str(single.get("model_type", "Eagle2_1BVLA"))
    twin = {"model_type": single_type[: -len("VLA")] + "TwinVLA" if single_type.endswith("VLA") else single_type}
    # A tiny test checkpoint's own tokenizer puts the image markers elsewhere than Eagle2's.
    for name in ("image_start_token_id", "image_end_token_id"):
        if name in single:
            twin[name] = single[name]
    return TwinVLAConfig.from_dicts(twin, single)


def twin_from_single_arm(path: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> TwinVLA:
    """The twin of the single-arm checkpoint at `path`, every parameter but the gates copied."""
    path = Path(path)
    config = twin_config_from_single(json.loads((path / "config.json").read_text()))
    model = TwinVLA.random(config, seed=seed)          # the gates keep this fresh init
    target = model.state_dict(keep_vars=True)
    filled: set[str] = set()
    with torch.no_grad():
        for file, keys in _checkpoint_files(path).items():
            with safe_open(str(file), framework="pt") as f:
                for key in keys:
                    for name in twin_names(key):
                        if name not in target:
                            raise CheckpointMismatchError(f"{path}: {key} maps to {name}, which this twin "
                                                          "configuration does not have")
                        tensor = f.get_tensor(key)
                        if tuple(tensor.shape) != tuple(target[name].shape):
                            raise CheckpointMismatchError(f"{path}: {key} is {tuple(tensor.shape)}, the twin's "
                                                          f"{name} is {tuple(target[name].shape)}")
                        target[name].copy_(tensor)
                        filled.add(name)
    missing = sorted(n for n in target if n not in filled and not n.startswith("gates."))
    if missing:
        raise CheckpointMismatchError(f"{path}: the single-arm checkpoint has nothing for {len(missing)} twin "
                                      f"parameters: {', '.join(missing[:8])}")
    model.vision_c.reset_buffers()
    return model.set_dtype(dtype).eval()
