"""Node parameters that mean what they say.

Every parameter is typed by its default (no dynamic typing), described, and, for numbers,
given a range that rclpy enforces at start and on every set. A parameter is read-only unless
it is declared `live`: then a `ros2 param set` is checked and handed to the node's apply
function, which makes it take effect or refuses with a reason. A set of anything else is
refused with "takes effect only at start", never accepted and ignored.

YAML files and launch arguments often write `100` for a float parameter; rclpy would refuse
the integer, so integers given for float parameters (single values and lists) are converted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

ApplyLive = Callable[[dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    length: int | None = None         # lists: required number of elements
    live: bool = False

    def check(self, value: Any) -> str | None:
        """Why `value` is not acceptable beyond what rclpy checks itself (choices, list bounds)."""
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if isinstance(self.default, list):
            if self.length is not None and len(value) != self.length:
                return f"{self.name} needs {self.length} values, got {len(value)}"
            for element in value:
                if (self.low is not None and element < self.low) or (self.high is not None and element > self.high):
                    return f"{self.name} elements must lie in [{self.low}, {self.high}], got {list(value)}"
        return None

    def descriptor(self) -> ParameterDescriptor:
        text = self.description
        if self.choices:
            text += f" (one of: {', '.join(self.choices)})"
        text += "; settable at run time" if self.live else "; read at start (restart to change)"
        descriptor = ParameterDescriptor(description=text, read_only=not self.live)
        if isinstance(self.default, list) and (self.low is not None or self.high is not None):
            descriptor.additional_constraints = f"each element in [{self.low}, {self.high}]"
        elif isinstance(self.default, bool) or self.low is None:
            pass
        elif isinstance(self.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(self.low),
                                                                  to_value=float(self.high), step=0.0)]
        elif isinstance(self.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=1)]
        return descriptor


def _as_declared_type(default: Any, value: Any) -> Any:
    """An int given for a float parameter (or ints in a float list) becomes a float."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (isinstance(default, list) and default and isinstance(default[0], float) and isinstance(value, list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return [float(v) for v in value]
    return value


class Parameters:
    """Declares a node's parameters and guards every later set. Call `declare` for each, then
    `set_apply` once if any is live."""

    def __init__(self, node: Node):
        self._node = node
        self._specs: dict[str, ParameterSpec] = {}
        self._apply: ApplyLive | None = None
        node.add_on_set_parameters_callback(self._on_set)
        if hasattr(node, "add_pre_set_parameters_callback"):      # Iron and newer
            node.add_pre_set_parameters_callback(self._coerce)

    def declare(self, name: str, default: Any, description: str, *, low: float | None = None,
                high: float | None = None, choices: Sequence[str] | None = None, length: int | None = None,
                live: bool = False) -> Any:
        spec = ParameterSpec(name, default, description, low, high,
                             tuple(choices) if choices is not None else None, length, live)
        # rclpy reads overrides (launch parameters, YAML) from this dict at declaration; the
        # only way to convert an int override before rclpy rejects it.
        overrides = self._node._parameter_overrides
        if name in overrides:
            overrides[name] = Parameter(name, value=_as_declared_type(default, overrides[name].value))
        value = self._node.declare_parameter(name, default, spec.descriptor()).value
        reason = spec.check(value)
        if reason is not None:
            raise ValueError(f"{self._node.get_name()}: {reason}")
        self._specs[name] = spec
        return value

    def set_apply(self, apply: ApplyLive) -> None:
        """apply({name: value, ...}) makes live changes take effect, or returns why not (then
        nothing changes)."""
        self._apply = apply

    def spec(self, name: str) -> ParameterSpec:
        return self._specs[name]

    def _coerce(self, parameters: list[Parameter]) -> list[Parameter]:
        out = []
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is not None:
                parameter = Parameter(parameter.name, value=_as_declared_type(spec.default, parameter.value))
            out.append(parameter)
        return out

    def _on_set(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {}
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is None:
                continue                # rclpy's own (use_sim_time ...) or being declared now
            if not spec.live:
                return SetParametersResult(successful=False, reason=(
                    f"{parameter.name} takes effect only at start: restart the node with the new value"))
            reason = spec.check(parameter.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            changes[parameter.name] = parameter.value
        if changes:
            reason = self._apply(changes) if self._apply is not None else "no live parameters on this node"
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)
