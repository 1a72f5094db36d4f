"""Pure-Python control core of the policy node (no ROS, no torch).

scheduler: ChunkScheduler decides per control tick which action to execute and when to infer
    (modes sync / async / rtc).
worker: InferenceWorker runs the model in a background thread; run_control_tick glues the two
    into one control-loop iteration.
sync: ApproximateTimeMatcher (message_filters-compatible stamp matching) and ObservationGate
    (per-stream age and cross-stream skew limits).
runtime: PolicyRuntime, the policy node's core (task state, input gating, inference, control tick).
"""
from twinvla_ros.execution.scheduler import (
    ChunkScheduler,
    ExecutionMode,
    Guidance,
    InferenceRequest,
    SchedulerConfig,
    SchedulerStats,
    rtc_prefix_weights,
)
from twinvla_ros.execution.observation import ApproximateTimeMatcher, GateStatus, ObservationGate, StreamLimit
from twinvla_ros.execution.worker import InferenceResult, InferenceWorker, run_control_tick
from twinvla_ros.execution.runtime import PolicyRuntime, RuntimeSettings, State

__all__ = [
    "ApproximateTimeMatcher",
    "ChunkScheduler",
    "ExecutionMode",
    "GateStatus",
    "Guidance",
    "InferenceRequest",
    "InferenceResult",
    "InferenceWorker",
    "ObservationGate",
    "PolicyRuntime",
    "RuntimeSettings",
    "SchedulerConfig",
    "SchedulerStats",
    "State",
    "StreamLimit",
    "rtc_prefix_weights",
    "run_control_tick",
]
