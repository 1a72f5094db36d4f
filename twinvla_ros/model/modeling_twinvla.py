"""TwinVLA: shared SigLIP + projector, twin Qwen2 stacks, proprio encoder, DiT action head.

State-dict names are the published ones, so `from_pretrained` reads the authors' safetensors
directly (strict: every missing, unexpected or mis-shaped key is reported).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .action_head import ActionHead
from .configuration_twinvla import TwinVLAConfig
from .flow import flow_matching_loss
from .processing_twinvla import EGO, PROPRIO, READOUT, WRIST_L, WRIST_R, ModelInputs
from .twin_llm import TwinLLM
from .vision import VisionTower, build_projector, image_tokens

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"


class CheckpointMismatchError(ValueError):
    pass


def _listing(title: str, keys: list[str], limit: int = 40) -> str:
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"  {title} ({len(keys)}):\n    {shown}{more}"


class TwinVLA(TwinLLM):
    def __init__(self, config: TwinVLAConfig):
        super().__init__(config)
        self.vision_c = VisionTower(config)
        self.mlp1 = build_projector(config)
        self.embed_arm_state = nn.Linear(config.state_dim, config.hidden_size)
        if not config.readout_token_as_eos:
            self.action_token_l = nn.Parameter(torch.zeros(config.num_readouts, config.hidden_size))
            self.action_token_r = nn.Parameter(torch.zeros(config.num_readouts, config.hidden_size))
        self.decoder_c = ActionHead(config)

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def random(cls, config: TwinVLAConfig, seed: int = 0) -> "TwinVLA":
        """Randomly initialised model (PyTorch default inits), reproducible, global RNG untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
            with torch.no_grad():
                for p in (model.decoder_c.net.z_embedder.uncondition, getattr(model, "action_token_l", None), getattr(model, "action_token_r", None)):
                    if p is not None:
                        p.normal_(std=0.02)
        return model.eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens_c.weight.dtype

    @property
    def head_dtype(self) -> torch.dtype:
        return self.decoder_c.combine.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens_c.weight.device

    def set_dtype(self, dtype: torch.dtype) -> "TwinVLA":
        """VLM in `dtype`; the action head stays float32, as the published checkpoints store it."""
        self.to(dtype)
        self.decoder_c.float()
        return self

    # ---- forward -------------------------------------------------------------------------
    def slot_columns(self, inputs: ModelInputs) -> dict[int, torch.Tensor]:
        """The sequence columns of every slot role, on the model's device."""
        return {role: inputs.columns(role).to(self.device) for role in (EGO, WRIST_L, WRIST_R, PROPRIO, READOUT)}

    def embed_inputs(self, inputs: ModelInputs, exact: bool = True, columns: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings with image, proprio and readout slots filled. -> (B, T, hidden).
        exact=False runs the three cameras through the vision tower as one batch (the reference
        runs one camera at a time; a batch rounds differently)."""
        dtype, device, cfg = self.dtype, self.device, self.config
        columns = columns if columns is not None else self.slot_columns(inputs)
        ids = inputs.input_ids.to(device)
        B, D = ids.shape[0], self.config.hidden_size
        h = self.embed_tokens_c(ids)
        cameras = ((EGO, inputs.pixel_ego), (WRIST_L, inputs.pixel_left), (WRIST_R, inputs.pixel_right))
        pixels = [p.to(device=device, dtype=dtype) for _, p in cameras]
        if exact:
            tokens = [image_tokens(self.vision_c, self.mlp1, p, cfg.downsample_ratio) for p in pixels]
        else:
            tokens = image_tokens(self.vision_c, self.mlp1, torch.cat(pixels), cfg.downsample_ratio).split(B)
        for (role, _), tok in zip(cameras, tokens):
            h[:, columns[role]] = tok.to(dtype)
        proprio = inputs.proprio.to(device=device, dtype=dtype)
        sd = cfg.state_dim
        # Per sample [left, right] (the proprio columns ascend). (The reference concatenates all
        # left then all right, wrong for batch > 1.) One call per arm, as it does.
        arm = torch.stack([self.embed_arm_state(proprio[:, :sd]), self.embed_arm_state(proprio[:, sd:])], dim=1)
        h[:, columns[PROPRIO]] = arm.to(dtype)
        if not cfg.readout_token_as_eos:
            per_sample = torch.cat([self.action_token_l, self.action_token_r], dim=0)
            h[:, columns[READOUT]] = per_sample.expand(B, -1, D).to(dtype)
        return h

    def encode(self, inputs: ModelInputs, exact: bool | None = None) -> torch.Tensor:
        """Vision + twin LLM -> readout hidden states (2B, R, hidden): rows [s0 left, s0 right, ...].
        exact: True the reference's ops (bit parity), False the fused inference path, None exact
        while autograd records (see TwinLLM.run_twin_llm)."""
        if exact is None:
            exact = self.records_gradient()
        inputs = inputs.to(self.device)  # all host-to-device copies first (no-ops when there)
        columns = self.slot_columns(inputs)
        h = self.run_twin_llm(self.embed_inputs(inputs, exact, columns), inputs.layout, exact=exact)
        return h[:, columns[READOUT]].reshape(-1, self.config.num_readouts, h.shape[-1])

    def condition(self, readouts: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        """Combined conditions z (2B, 1, hidden) for the head, in the head's dtype."""
        hd = self.head_dtype
        proprio = inputs.proprio.to(device=self.device, dtype=self.dtype).reshape(-1, self.config.state_dim)
        return self.decoder_c.condition(readouts.to(hd), proprio.to(hd))

    def compute_loss(self, inputs: ModelInputs, actions: torch.Tensor, exact: bool = True,
                     valid_steps: torch.Tensor | None = None) -> torch.Tensor:
        """The reference flow-matching loss. actions (B, L, 2A) normalized; view(-1, L, A) gives
        the two head rows per sample (steps 0..L/2-1 and L/2..L-1, [L, R] interleaved).
        exact=False trains through the fused twin LLM: faster, and the re-weighting's true
        gradient instead of the reference's straight-through one. valid_steps (B, L) bool,
        optional: steps past an episode's end (False) are left out of the loss; the reference
        trains on them (the last action repeated)."""
        cfg = self.config
        z = self.condition(self.encode(inputs, exact=exact), inputs)
        rows = actions.to(device=self.device, dtype=self.head_dtype).reshape(-1, cfg.action_len, cfg.action_dim)
        valid_rows = None
        if valid_steps is not None:
            # The same reshape as the actions, so every element keeps its own step's flag.
            valid_rows = valid_steps[:, :, None].expand(actions.shape).reshape(rows.shape).to(self.device)
        return flow_matching_loss(self.decoder_c.net, z, rows, cfg.diffusion_batch, 0.1 if cfg.enable_cfg else 0.0,
                                  valid_rows)

    # ---- checkpoints ---------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> "TwinVLA":
        """dtype None: float32 on CPU, bfloat16 elsewhere (the head stays float32 either way)."""
        path = Path(path)
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
        config = TwinVLAConfig.from_pretrained(path)
        with torch.device("meta"):
            model = cls(config)
        files = _checkpoint_files(path)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found: dict[str, tuple[int, ...]] = {}
        for file, keys in files.items():
            with safe_open(str(file), framework="pt") as f:
                for k in keys:
                    found[k] = tuple(f.get_slice(k).get_shape())
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        shapes = sorted(f"{k}: checkpoint {found[k]} vs model {expected[k]}" for k in set(found) & set(expected) if found[k] != expected[k])
        if missing or unexpected or shapes:
            parts = [_listing(t, ks) for t, ks in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if ks]
            raise CheckpointMismatchError(f"checkpoint {path} does not fit the model built from its config:\n" + "\n".join(parts))
        model = model.to_empty(device=device)
        target = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for file, keys in files.items():
                with safe_open(str(file), framework="pt") as f:
                    for k in keys:
                        target[k].copy_(f.get_tensor(k))
        model.vision_c.reset_buffers()
        return model.set_dtype(dtype).eval()


def _checkpoint_files(path: Path) -> dict[Path, list[str]]:
    single = path / WEIGHTS_NAME
    if single.is_file():
        with safe_open(str(single), framework="pt") as f:
            return {single: list(f.keys())}
    index = path / INDEX_NAME
    if index.is_file():
        files: dict[Path, list[str]] = {}
        for key, name in json.loads(index.read_text())["weight_map"].items():
            files.setdefault(path / name, []).append(key)
        return files
    raise FileNotFoundError(f"no {WEIGHTS_NAME} or {INDEX_NAME} in {path}")
