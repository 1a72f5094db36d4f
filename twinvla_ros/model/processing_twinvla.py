"""Pre/post-processing: images, the prompt and token layout, quantile normalization, tokenizers."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .configuration_twinvla import TINY_BASE_VOCAB, TINY_SPECIAL_TOKENS, TwinVLAConfig
from .twin_llm import JointLayout

SYSTEM_PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
# Whitespace is part of the trained format: two spaces after "assistant.", 12-space indents,
# "Base State: " then a newline and 8 spaces.
PROMPT_TEMPLATE = (
    "You are a robotic decision-making assistant.  \n"
    "            Given a task and robotic system states (Base, Arm), determine the appropriate action.\n"
    "            What action should the robot take to accomplish {task}?\n"
    "            Base State: \n"
    "        "
)

# Token roles in the sequence (the reference's modal ids).
TEXT, EGO, WRIST_L, WRIST_R, PROPRIO, READOUT = 0, 1, 2, 3, 4, 5
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


def base_prompt(task: str) -> str:
    return SYSTEM_PROMPT + PROMPT_TEMPLATE.format(task=task)


def preprocess_image(image: np.ndarray, size: int, device: torch.device | str = "cpu", exact: bool = True) -> torch.Tensor:
    """uint8 (H, W, 3) RGB at any size -> (3, size, size) float32 on `device`: [0, 1],
    antialiased bicubic resize without keeping the aspect ratio (skipped at the target size, as
    torchvision does), then (x - 0.5) / 0.5. The uint8 image moves, not the 4x larger floats.
    exact=False resizes the 0..255 values and scales once after (x * 2/255 - 1): the resize is
    linear, so the same result up to rounding, with one pass over the full-size image fewer."""
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).to(torch.float32)
    if exact:
        x = x / 255.0
    x = x.permute(2, 0, 1)
    if tuple(x.shape[1:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bicubic", align_corners=False, antialias=True)[0]
    return (x - 0.5) / 0.5 if exact else x.mul_(2.0 / 255.0).sub_(1.0)


def resize_frames(frames: np.ndarray, size: int, chunk: int = 64) -> np.ndarray:
    """uint8 (L, H, W, 3) RGB -> uint8 (L, size, size, 3) with preprocess_image's resize, rounded:
    what the model sees of each frame, within 0.5/255, at a fraction of the memory of the
    full-size frames (training caches decoded episodes this way)."""
    if frames.shape[1:3] == (size, size):
        return frames
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for start in range(0, len(frames), chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[start:start + chunk])).permute(0, 3, 1, 2).to(torch.float32)
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        out[start:start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


# ---- normalization --------------------------------------------------------------------------


def default_xyz_mask(dim: int) -> np.ndarray:
    """[T, T, T, F x7] per 10-D arm: only positions are normalized."""
    arm = np.array([True] * 3 + [False] * 7)
    return np.tile(arm, dim // 10) if dim % 10 == 0 else np.ones(dim, dtype=bool)


def default_statistics(xyz_q01: Sequence[float] = (-0.3, -0.4, 0.0), xyz_q99: Sequence[float] = (0.5, 0.4, 0.6)) -> dict[str, Any]:
    """A dataset_statistics entry for an assumed workspace. Three bounds per side give a 10-D
    entry applied to each arm; six (left xyz, then right xyz) give a 20-D entry, one per arm."""
    if len(xyz_q01) != len(xyz_q99) or len(xyz_q01) not in (3, 6):
        raise ValueError("xyz_q01 and xyz_q99 need 3 values (both arms) or 6 (left, then right)")
    q01, q99 = [], []
    for arm in range(len(xyz_q01) // 3):
        q01 += list(map(float, xyz_q01[3 * arm: 3 * arm + 3])) + [-1.0] * 6 + [0.0]
        q99 += list(map(float, xyz_q99[3 * arm: 3 * arm + 3])) + [1.0] * 6 + [1.0]
    part = {
        "mean": [(a + b) / 2 for a, b in zip(q01, q99)],
        "std": [(b - a) / 4 for a, b in zip(q01, q99)],
        "min": q01,
        "max": q99,
        "q01": q01,
        "q99": q99,
        "mask": default_xyz_mask(len(q01)).tolist(),
    }
    return {"action": dict(part), "proprio": dict(part), "num_transitions": 0, "num_trajectories": 0}


class Normalizer:
    """Quantile normalization of one `unnorm_key`, op for op as the reference (float64 numpy).
    Statistics of half the vector's size apply to each half (one arm's 10-D stats for both)."""

    def __init__(self, statistics: dict[str, Any], unnorm_key: str | None, method: str):
        if unnorm_key is None:
            if len(statistics) != 1:
                raise ValueError(f"several datasets in dataset_statistics.json; pass unnorm_key, one of {sorted(statistics)}")
            unnorm_key = next(iter(statistics))
        if unnorm_key not in statistics:
            raise KeyError(f"unnorm_key {unnorm_key!r} not in dataset statistics; available: {sorted(statistics)}")
        if method not in ("quantile", "normal"):
            raise NotImplementedError(f"normalization {method!r}")
        self.key = unnorm_key
        self.method = method
        entry = statistics[unnorm_key]
        self.action = self._part(entry["action"])
        self.proprio = self._part(entry.get("proprio", entry["action"]))

    @staticmethod
    def _part(part: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        low, high = np.array(part["q01"]), np.array(part["q99"])
        mask = np.array(part["mask"]) if "mask" in part else default_xyz_mask(low.shape[-1])
        return low, high, mask

    @staticmethod
    def _apply(x: np.ndarray, part, fn) -> np.ndarray:
        low, high, mask = part
        if low.shape[-1] * 2 == x.shape[-1]:
            half = x.shape[-1] // 2
            return np.concatenate(
                [np.where(mask, fn(x[..., :half], low, high), x[..., :half]), np.where(mask, fn(x[..., half:], low, high), x[..., half:])],
                axis=-1,
            )
        return np.where(mask, fn(x, low, high), x)

    def normalize_proprio(self, state: np.ndarray) -> np.ndarray:
        if self.method == "normal":
            return np.asarray(state)
        return self._apply(np.asarray(state), self.proprio, lambda x, lo, hi: (x - lo) * 2 / (hi - lo + 1e-6) - 1)

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        if self.method == "normal":
            return np.asarray(action)
        return self._apply(np.asarray(action), self.action, lambda a, lo, hi: (a + 1) * (hi - lo + 1e-6) / 2 + lo)

    def normalize_action(self, action: np.ndarray) -> np.ndarray:
        """Exact inverse of unnormalize_action (robot-unit targets into the model's space)."""
        if self.method == "normal":
            return np.asarray(action)
        return self._apply(np.asarray(action), self.action, lambda a, lo, hi: (a - lo) * 2 / (hi - lo + 1e-6) - 1)

    def normalize_for_training(self, x: np.ndarray, which: str) -> np.ndarray:
        """The training data pipeline's form (BOUNDS_Q99): 2(x - q01)/(q99 - q01 + 1e-6) - 1, clipped to [-1, 1]."""
        if self.method == "normal":
            return np.asarray(x)
        part = self.action if which == "action" else self.proprio
        return self._apply(np.asarray(x), part, lambda v, lo, hi: np.clip(2 * (v - lo) / (hi - lo + 1e-6) - 1, -1, 1))


def load_statistics(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "dataset_statistics.json").read_text())


# ---- tokenizers -----------------------------------------------------------------------------


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer, PretrainedConfig

    kwargs: dict[str, Any] = {}
    tokenizer_config = Path(path) / "tokenizer_config.json"
    if tokenizer_config.is_file() and json.loads(tokenizer_config.read_text()).get("tokenizer_class"):
        # The class is named: AutoTokenizer needs no model config. Without one it reads the
        # directory's config.json, whose TwinVLA model type transformers does not know, and warns
        # on every load that the checkpoint may not fit the model.
        kwargs["config"] = PretrainedConfig()
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True, **kwargs)


def has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


_TINY_CORPUS = [
    base_prompt("pick up the red cube and hand it over"),
    "Arm State: \n\nAction: ",
    "pick up the cube, place the block in the box, hand over the object, fold the towel, "
    "stack the bowls, open the drawer, push the button, lift the bread, put the carrot on the plate",
]


def build_tiny_tokenizer():
    """A small byte-level BPE with the special tokens of the Eagle2 prompt at fixed ids
    (TINY_BASE_VOCAB + index in TINY_SPECIAL_TOKENS). Deterministic; built in memory."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_BASE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_TINY_CORPUS * 4, trainer)
    if tok.get_vocab_size() != TINY_BASE_VOCAB:
        raise RuntimeError(f"tiny BPE has {tok.get_vocab_size()} tokens, expected {TINY_BASE_VOCAB}")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in TINY_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


# ---- token layout ---------------------------------------------------------------------------


@dataclass
class ModelInputs:
    """One batch for TwinVLA.encode. Shapes: ids/modal (B, T); pixels (B, 3, S, S);
    proprio (B, 2*state_dim) normalized, float64 as the reference hands it to the model."""

    input_ids: torch.Tensor
    modal: torch.Tensor
    layout: JointLayout
    pixel_ego: torch.Tensor
    pixel_left: torch.Tensor
    pixel_right: torch.Tensor
    proprio: torch.Tensor

    def columns(self, role: int) -> torch.Tensor:
        """(n,) long, CPU: the sequence columns holding `role`. They are the same in every row
        (the shared block is left-padded and the ego image ends it; the arm blocks are identical),
        so slots fill and read by column, without a boolean gather (a host sync on a GPU)."""
        modal = self.modal.cpu()
        hits = modal[0] == role
        if not torch.equal(modal == role, hits.expand_as(modal)):
            raise ValueError(f"role {role} sits in different columns in different rows")
        return hits.nonzero().squeeze(1)

    def to(self, device: torch.device | str) -> "ModelInputs":
        """What the model reads, on `device`, copied in one go before any kernel runs (a copy from
        the host issued between kernels waits for them). `modal` stays: columns() reads it."""
        move = lambda t: t.to(device)  # noqa: E731
        return dataclasses.replace(
            self,
            input_ids=move(self.input_ids),
            layout=self.layout.to(device),
            pixel_ego=move(self.pixel_ego),
            pixel_left=move(self.pixel_left),
            pixel_right=move(self.pixel_right),
            proprio=move(self.proprio),
        )


class TwinVLAProcessor:
    def __init__(self, config: TwinVLAConfig, tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        for token, expected in (("<img>", config.image_start_token_id), ("</img>", config.image_end_token_id)):
            got = tokenizer.convert_tokens_to_ids(token)
            if got != expected:
                raise ValueError(f"tokenizer does not match the checkpoint: {token} is id {got}, the model expects {expected}")
        if len(tokenizer) > int(config.llm["vocab_size"]):
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model's vocabulary only {config.llm['vocab_size']}")
        n, R = config.num_image_tokens, config.num_readouts
        self._ln = self._ids("\n")
        arm_text, act_text = self._ids("Arm State: "), self._ids("Action: ")
        image = [config.image_start_token_id] + [0] * n + [config.image_end_token_id]
        self.image_ids = image
        self.arm_ids = arm_text + image + [0] + self._ln + self._ln + act_text + [0] * R
        self._arm_roles = [TEXT] * len(arm_text) + [TEXT] + [None] * n + [TEXT] + [PROPRIO] + [TEXT] * (2 * len(self._ln) + len(act_text)) + [READOUT] * R
        self._prefix_cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def shared_ids(self, instruction: str) -> list[int]:
        prefix = self._prefix_cache.get(instruction)
        if prefix is None:
            prefix = self._ids(base_prompt(instruction))
            if len(self._prefix_cache) < 1024:
                self._prefix_cache[instruction] = prefix
        return prefix + self.image_ids + self._ln

    def _shared_roles(self, length: int) -> list[int]:
        n = self.config.num_image_tokens
        text_before = length - len(self._ln) - n - 2
        return [TEXT] * (text_before + 1) + [EGO] * n + [TEXT] * (1 + len(self._ln))

    def arm_roles(self, camera: int) -> list[int]:
        return [camera if r is None else r for r in self._arm_roles]

    def tokens(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, JointLayout]:
        """-> input_ids (B, T), roles (B, T), layout. Shared blocks left-padded with id 0."""
        shared = [self.shared_ids(s) for s in instructions]
        C = max(len(s) for s in shared)
        left, right = self.arm_roles(WRIST_L), self.arm_roles(WRIST_R)
        ids, roles = [], []
        for s in shared:
            pad = C - len(s)
            ids.append([0] * pad + s + self.arm_ids + self.arm_ids)
            roles.append([TEXT] * pad + self._shared_roles(len(s)) + left + right)
        layout = JointLayout.build([len(s) for s in shared], len(self.arm_ids))
        return torch.tensor(ids, dtype=torch.long), torch.tensor(roles, dtype=torch.long), layout

    def __call__(
        self,
        instructions: Sequence[str],
        images: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        proprio_normalized: np.ndarray,
        device: torch.device | str = "cpu",
        exact: bool = True,
    ) -> ModelInputs:
        """images: per sample (ego, left wrist, right wrist) uint8 RGB, resized on `device`
        (exact: see preprocess_image)."""
        ids, roles, layout = self.tokens(instructions)
        size = self.config.image_size
        pix = [torch.stack([preprocess_image(im[c], size, device, exact) for im in images]) for c in range(3)]
        proprio = torch.from_numpy(np.asarray(proprio_normalized).reshape(len(instructions), -1))
        return ModelInputs(ids, roles, layout, pix[0], pix[1], pix[2], proprio)
