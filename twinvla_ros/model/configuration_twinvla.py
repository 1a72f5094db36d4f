"""TwinVLA configuration, read from a checkpoint's `config.json` + `singlevla_config/config.json`.

The authors' twin config repeats a few fields of the single-arm config (action_dim/len,
state_dim, normalization, num_readouts, readout_token_as_eos, denoiser) and adds the twin flags;
the sizes (Qwen2 `llm_config`, SigLIP `vision_config`, `dit_size`, image size) live only in the
single-arm config. Sizes are always read, never assumed: any depth, width and image size works.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# (depth, width, heads). DiT-S/B/L are the authors' sizes; DiT-Ti is this package's own size for
# the tiny test/demo preset (the authors' code cannot build it, nothing published uses it).
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "DiT-Ti": (4, 128, 4),
    "DiT-S": (6, 384, 4),
    "DiT-B": (12, 768, 12),
    "DiT-L": (24, 1024, 16),
}

# Sub-config entries that describe the authors' runtime (attention kernel, remote code, dtype),
# not the architecture; dropped before building transformers configs.
_RUNTIME_KEYS = (
    "attn_implementation",
    "_attn_implementation",
    "auto_map",
    "architectures",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "_name_or_path",
    "_commit_hash",
    "model_type",
)

# Fields that construct_twinvla copies from the single-arm config into the twin config.
_TWIN_COPIED = ("action_dim", "action_len", "state_dim", "normalization", "num_readouts", "readout_token_as_eos", "denoiser")
_TWIN_FLAGS = ("share_vision", "share_decoder", "share_embed_tokens", "attn_reweighting", "enable_moe", "enable_joint_attn")

EAGLE2_LLM: dict[str, Any] = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "vocab_size": 151674,
    "tie_word_embeddings": True,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
EAGLE2_VISION: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 448,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "vision_use_head": False,
}

# The tiny tokenizer (processor.build_tiny_tokenizer) puts its special tokens at these ids.
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>")
TINY_BASE_VOCAB = 320
TINY_LLM: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 4096,
    "vocab_size": 384,
    "tie_word_embeddings": True,
    "attention_dropout": 0.0,
}
TINY_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "vision_use_head": False,
}


def _clean(sub: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sub.items() if k not in _RUNTIME_KEYS}


@dataclass
class TwinVLAConfig:
    llm: dict[str, Any]
    vision: dict[str, Any]
    dit_size: str = "DiT-L"
    action_dim: int = 10
    action_len: int = 20
    state_dim: int = 10
    normalization: str = "quantile"
    num_readouts: int = 1
    readout_token_as_eos: bool = True
    enable_cfg: bool = True
    denoiser: str = "FM"
    test_denoising_steps: int = 10
    # The authors' DiTPolicy is built without this argument, so training always repeats 16 times
    # whatever the single-arm config says; kept as a field (not read from checkpoints) for fine-tuning.
    diffusion_batch: int = 16
    force_image_size: int | None = 448
    downsample_ratio: float = 0.5
    share_vision: bool = True
    share_decoder: bool = True
    share_embed_tokens: bool = True
    attn_reweighting: bool = True
    enable_moe: bool = True
    enable_joint_attn: bool = True
    # `<img>` / `</img>` of the Eagle2 (Qwen2.5) tokenizer; the reference hard-codes them.
    image_start_token_id: int = 151665
    image_end_token_id: int = 151666
    model_type: str = "Eagle2_1BTwinVLA"
    # Everything else found in the two JSON files, written back unchanged by save().
    raw_twin: dict[str, Any] = field(default_factory=dict, repr=False)
    raw_single: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.llm["hidden_size"])

    @property
    def num_layers(self) -> int:
        return int(self.llm["num_hidden_layers"])

    @property
    def image_size(self) -> int:
        return int(self.force_image_size or self.vision["image_size"])

    @property
    def patch_size(self) -> int:
        return int(self.vision["patch_size"])

    @property
    def num_image_tokens(self) -> int:
        side = self.image_size // self.patch_size
        return int(side * side * self.downsample_ratio**2)

    def with_image_size(self, size: int) -> "TwinVLAConfig":
        """This architecture for `size` px images (a random model's choice: a checkpoint's vision
        encoder keeps the size it was trained at). ValueError unless the pixel shuffle can merge
        the patch grid: size a multiple of patch / downsample_ratio (28 for patch 14)."""
        step = round(self.patch_size / self.downsample_ratio)
        if isinstance(size, bool) or not isinstance(size, int) or size < step or size % step:
            raise ValueError(f"image size must be a positive multiple of {step} px (patch {self.patch_size}, "
                             f"pixel shuffle {self.downsample_ratio}), got {size!r}")
        return dataclasses.replace(self, vision={**self.vision, "image_size": size}, force_image_size=size)

    @property
    def dit_dims(self) -> tuple[int, int, int]:
        if self.dit_size not in DIT_SIZES:
            raise ValueError(f"unknown dit_size {self.dit_size!r}; known: {sorted(DIT_SIZES)}")
        return DIT_SIZES[self.dit_size]

    def llm_kwargs(self) -> dict[str, Any]:
        return _clean(self.llm)

    def vision_kwargs(self) -> dict[str, Any]:
        kw = _clean(self.vision)
        kw["vision_use_head"] = False
        return kw

    def check_supported(self) -> None:
        """Raise for the authors' ablation settings this implementation does not build."""
        problems = []
        for name in ("share_vision", "share_decoder", "share_embed_tokens", "enable_moe", "enable_joint_attn"):
            if not getattr(self, name):
                problems.append(f"{name}=false")
        if self.num_readouts != 1:
            problems.append(f"num_readouts={self.num_readouts} (only 1)")
        if self.denoiser != "FM":
            problems.append(f"denoiser={self.denoiser!r} (only 'FM')")
        if self.normalization not in ("quantile", "normal"):
            problems.append(f"normalization={self.normalization!r} (only 'quantile' or 'normal')")
        if self.image_size % self.patch_size:
            problems.append(f"image size {self.image_size} not a multiple of patch {self.patch_size}")
        if self.image_size != int(self.vision["image_size"]):
            problems.append(f"force_image_size {self.image_size} != vision image_size {self.vision['image_size']}")
        if problems:
            raise NotImplementedError("unsupported TwinVLA configuration: " + ", ".join(problems))

    # ---- presets -------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "TwinVLAConfig":
        if name == "eagle2-1b":
            return cls(llm=dict(EAGLE2_LLM), vision=dict(EAGLE2_VISION))
        if name == "tiny-reference":
            # The smallest configuration the authors' code builds (it hard-codes 24 layers and
            # 448 px; DiT-S is its smallest head), with the tiny preset's widths and tokenizer:
            # the size their code and this package were timed against each other on.
            tiny = cls.preset("tiny")
            return dataclasses.replace(
                tiny,
                llm={**tiny.llm, "num_hidden_layers": 24},
                vision={**tiny.vision, "image_size": 448},
                force_image_size=448,
                dit_size="DiT-S",
                readout_token_as_eos=True,
                model_type="TinyReferenceTwinVLA",
            )
        if name == "tiny":
            return cls(
                llm=dict(TINY_LLM),
                vision=dict(TINY_VISION),
                dit_size="DiT-Ti",
                force_image_size=TINY_VISION["image_size"],
                readout_token_as_eos=False,
                image_start_token_id=TINY_BASE_VOCAB + TINY_SPECIAL_TOKENS.index("<img>"),
                image_end_token_id=TINY_BASE_VOCAB + TINY_SPECIAL_TOKENS.index("</img>"),
                model_type="TinyTwinVLA",
            )
        raise ValueError(f"unknown preset {name!r}; known: 'eagle2-1b', 'tiny', 'tiny-reference'")

    # ---- JSON ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path) -> "TwinVLAConfig":
        path = Path(path)
        twin_file = path / "config.json"
        if not twin_file.is_file():
            raise FileNotFoundError(f"no config.json in {path}")
        twin = json.loads(twin_file.read_text())
        single_file = path / "singlevla_config" / "config.json"
        if single_file.is_file():
            single = json.loads(single_file.read_text())
        elif isinstance(twin.get("singlevla_config"), dict):
            single = twin["singlevla_config"]
        else:
            raise FileNotFoundError(f"no singlevla_config/config.json in {path}")
        return cls.from_dicts(twin, single)

    @classmethod
    def from_dicts(cls, twin: dict[str, Any], single: dict[str, Any]) -> "TwinVLAConfig":
        if "llm_config" not in single or "vision_config" not in single:
            raise ValueError("singlevla config lacks llm_config/vision_config")
        kw: dict[str, Any] = dict(llm=dict(single["llm_config"]), vision=dict(single["vision_config"]))
        for name in ("dit_size", "enable_cfg", "test_denoising_steps", "force_image_size", "downsample_ratio"):
            if single.get(name) is not None:
                kw[name] = single[name]
        for name in _TWIN_COPIED:
            value = twin.get(name, single.get(name))
            if value is not None:
                kw[name] = value
        for name in _TWIN_FLAGS:
            if twin.get(name) is not None:
                kw[name] = twin[name]
        for name in ("image_start_token_id", "image_end_token_id"):
            if twin.get(name) is not None:
                kw[name] = twin[name]
        if twin.get("model_type"):
            kw["model_type"] = twin["model_type"]
        # The DiT's positional table is sized by the single-arm action_len; the twin reshapes its
        # output with its own action_len: the two must agree.
        if single.get("action_len") is not None and int(single["action_len"]) != int(kw.get("action_len", 20)):
            raise ValueError(f"action_len differs: twin {kw.get('action_len')} vs singlevla {single['action_len']}")
        cfg = cls(**kw, raw_twin=copy.deepcopy(twin), raw_single=copy.deepcopy(single))
        cfg.check_supported()
        return cfg

    def to_dicts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        twin = copy.deepcopy(self.raw_twin)
        twin.pop("singlevla_config", None)
        single = copy.deepcopy(self.raw_single)
        twin["model_type"] = self.model_type
        for name in _TWIN_COPIED + _TWIN_FLAGS:
            twin[name] = getattr(self, name)
        twin.setdefault("action_head", "DiT")
        twin.setdefault("modeling", "denoising")
        if self.model_type != "Eagle2_1BTwinVLA":
            # Not the published tokenizer: record where the image markers are.
            twin["image_start_token_id"] = self.image_start_token_id
            twin["image_end_token_id"] = self.image_end_token_id
        single["llm_config"] = {**single.get("llm_config", {}), **self.llm}
        single["vision_config"] = {**single.get("vision_config", {}), **self.vision}
        for name in _TWIN_COPIED + ("dit_size", "enable_cfg", "test_denoising_steps", "force_image_size", "downsample_ratio"):
            single[name] = getattr(self, name)
        single.setdefault("action_head", "DiT")
        return twin, single

    def save(self, path: str | Path) -> None:
        path = Path(path)
        (path / "singlevla_config").mkdir(parents=True, exist_ok=True)
        twin, single = self.to_dicts()
        (path / "config.json").write_text(json.dumps(twin, indent=2, sort_keys=True) + "\n")
        (path / "singlevla_config" / "config.json").write_text(json.dumps(single, indent=2, sort_keys=True) + "\n")
