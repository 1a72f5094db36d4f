"""TwinVLA (arXiv 2511.05275) in PyTorch, compatible with the authors' published checkpoints.

Pure Python, no ROS import. Entry point: TwinVLAPolicy (from_pretrained / tiny / predict /
encode + sample for real-time chunking).
"""
from .configuration_twinvla import TwinVLAConfig
from .modeling_twinvla import CheckpointMismatchError, TwinVLA
from .inference import Guidance, Observation, PolicyContext, TwinVLAPolicy
from .processing_twinvla import ModelInputs, Normalizer, TwinVLAProcessor, build_tiny_tokenizer, default_statistics, load_tokenizer

__all__ = [
    "CheckpointMismatchError",
    "Guidance",
    "ModelInputs",
    "Normalizer",
    "Observation",
    "PolicyContext",
    "TwinVLA",
    "TwinVLAConfig",
    "TwinVLAPolicy",
    "TwinVLAProcessor",
    "build_tiny_tokenizer",
    "default_statistics",
    "load_tokenizer",
]
