"""The base of every twinvla_ros node: guarded callbacks, declared parameters, /diagnostics,
and the process entry point.

A callback that raises never ends a node, whichever way it runs (`ros2 launch`, one process
per node, or all in one process): every subscription, service and timer callback goes through
`guarded`, which counts the failure, logs it (the traceback once, then throttled) and turns the
node's "callbacks" status on /diagnostics to ERROR for as long as failures keep coming.
"""
from __future__ import annotations

import functools
import gc
import signal
import threading
import time
import traceback
from typing import Any, Callable, Iterable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from twinvla_ros.reporting import EventLog, Level, Status
from twinvla_ros.ros.parameters import Parameters
from twinvla_ros.ros.qos import COMMAND_QOS

# A failure keeps the status at ERROR this long after it happened.
FAILURE_REPORT_SECONDS = 10.0


class TwinvlaNode(Node):
    def __init__(self, name: str, hardware_id: str = "anubis", **node_kwargs):
        super().__init__(name, **node_kwargs)
        self.parameters = Parameters(self)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", COMMAND_QOS)
        self._hardware_id = hardware_id
        self._failures = EventLog(interval=5.0)
        self._failure_lock = threading.Lock()
        self.callback_failures = 0
        self.last_callback_failure = ""
        self._last_failure_time = -float("inf")

    def ros_now(self) -> float:
        """The node's ROS clock in seconds: the clock of every header stamp."""
        return self.get_clock().now().nanoseconds * 1e-9

    # ---- guarded entities ------------------------------------------------------------------

    def guarded(self, what: str, callback: Callable[..., Any], on_error: Callable[[str], Any] | None = None):
        """`callback` that reports instead of raising; returns `on_error(reason)` when it raised."""
        @functools.wraps(callback)
        def run(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as error:   # noqa: BLE001 -- any failure is reported, none ends the node
                if not self.context.ok():
                    return None          # ROS shut down under the callback: a normal end
                self.report_failure(what, error)
                return on_error(f"{type(error).__name__}: {error}") if on_error is not None else None
        return run

    def report_failure(self, what: str, error: BaseException) -> None:
        with self._failure_lock:
            self.callback_failures += 1
            self.last_callback_failure = f"{what}: {type(error).__name__}: {error}"
            self._last_failure_time = time.monotonic()
            first = self._failures.count(what) == 0
        detail = f"\n{traceback.format_exc()}" if first else ""
        self._failures.add(what, f"{what} failed: {type(error).__name__}: {error}{detail}", Level.ERROR)
        for _, message in self._failures.drain():
            self.get_logger().error(message)

    def subscribe(self, msg_type, topic: str, callback, qos, what: str | None = None):
        return self.create_subscription(msg_type, topic, self.guarded(what or f"{topic} callback", callback), qos)

    def service(self, srv_type, name: str, callback):
        def refuse(reason: str):
            response = srv_type.Response()
            if hasattr(response, "success"):
                response.success = False
                response.message = f"failed: {reason}"
            return response
        return self.create_service(srv_type, name, self.guarded(f"service {name}", callback, refuse))

    def timer(self, period: float, callback, what: str):
        return self.create_timer(period, self.guarded(what, callback))

    # ---- /diagnostics ----------------------------------------------------------------------

    def callbacks_status(self) -> Status:
        with self._failure_lock:
            values = {"failures": str(self.callback_failures), "last_failure": self.last_callback_failure}
            recent = time.monotonic() - self._last_failure_time < FAILURE_REPORT_SECONDS
        if recent:
            return Status(Level.ERROR, f"failing: {self.last_callback_failure}", values)
        return Status(Level.OK, "ok", values)

    def publish_diagnostics(self, statuses: Iterable[tuple[str, Status]]) -> None:
        """One DiagnosticArray: the node's own statuses plus its callbacks' health."""
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        for name, status in [*statuses, ("callbacks", self.callbacks_status())]:
            message = DiagnosticStatus()
            message.level = bytes([int(status.level)])
            message.name = f"{self.get_name()}: {name}"
            message.message = status.message
            message.hardware_id = self._hardware_id
            message.values = [KeyValue(key=str(k), value=str(v)) for k, v in status.values.items()]
            array.status.append(message)
        self._diagnostics_pub.publish(array)

    def log(self, level: Level, message: str) -> None:
        # One call site per severity: rclpy refuses a call site that changes severity.
        if level == Level.ERROR:
            self.get_logger().error(message)
        elif level == Level.WARN:
            self.get_logger().warning(message)
        else:
            self.get_logger().info(message)

    def close(self) -> None:
        """Safe shutdown hook, called before the node is destroyed."""


class StartupError(RuntimeError):
    """A managed node could not be brought to active: its devices are missing or refused."""


class TwinvlaLifecycleNode(TwinvlaNode, LifecycleNode):
    """A hardware-facing node managed as ros2_control manages hardware interfaces.

    unconfigured --configure--> inactive (devices open, measured, nothing moves)
    --activate--> active (motion) --deactivate--> inactive (holding) --cleanup--> unconfigured;
    error and shutdown put the devices in their safe state. Subclasses implement the five
    `*_devices` hooks; a hook that raises fails its transition (the node stays where it was)
    with the reason in the log, on /diagnostics and in `transition_failure`. With `autostart`
    (the default, set by the launch files and the runner) the node configures and activates
    itself at start; `autostart:=false` leaves it to `ros2 lifecycle set`.
    """

    def __init__(self, name: str, **node_kwargs):
        super().__init__(name, **node_kwargs)
        self.autostart = self.parameters.declare(
            "autostart", True, "configure and activate at start (false: wait for `ros2 lifecycle set`)")
        self.lifecycle_state = "unconfigured"
        self.transition_failure = ""

    # ---- hooks for subclasses --------------------------------------------------------------

    def configure_devices(self) -> None:
        """Open and check the devices; read their state. Nothing may move."""

    def activate_devices(self) -> None:
        """Enable motion / streaming."""

    def deactivate_devices(self) -> None:
        """Stop motion / streaming; devices stay open (arms hold)."""

    def cleanup_devices(self) -> None:
        """Close the devices."""

    def safe_state(self, reason: str) -> None:
        """Error or shutdown: leave the devices in their configured safe state and close them."""

    # ---- transitions -----------------------------------------------------------------------

    def _transition(self, name: str, hook: Callable[[], None], target: str) -> TransitionCallbackReturn:
        try:
            hook()
        except Exception as error:      # noqa: BLE001 -- a failed transition is reported, not raised
            self.transition_failure = f"{name} failed: {type(error).__name__}: {error}"
            self.get_logger().error(self.transition_failure)
            self.publish_diagnostics([("lifecycle", self.lifecycle_status())])
            return TransitionCallbackReturn.FAILURE
        self.transition_failure = ""
        self.lifecycle_state = target
        self.get_logger().info(f"lifecycle: {target}")
        self.publish_diagnostics([("lifecycle", self.lifecycle_status())])
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self.configure_devices, "inactive")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("activate", self.activate_devices, "active")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", self.deactivate_devices, "inactive")

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", self.cleanup_devices, "unconfigured")

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("shutdown", lambda: self.safe_state("shutdown"), "finalized")

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # rclpy gets here when a transition callback raised past our hooks; the safe state
        # is entered and the node goes back to unconfigured (configure may be retried).
        return self._transition("error processing", lambda: self.safe_state("error"), "unconfigured")

    def lifecycle_status(self) -> Status:
        values = {"state": self.lifecycle_state, "autostart": str(self.autostart)}
        if self.transition_failure:
            return Status(Level.ERROR, self.transition_failure, values)
        if self.lifecycle_state != "active":
            return Status(Level.WARN, f"{self.lifecycle_state}: not active", values)
        return Status(Level.OK, "active", values)

    def bring_up(self) -> None:
        """configure, then activate; StartupError with the reason when either fails."""
        for name, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            if trigger() != TransitionCallbackReturn.SUCCESS:
                raise StartupError(f"{self.get_name()}: {self.transition_failure or name + ' failed'}")

    def close(self) -> None:
        """Process end: the shutdown transition (safe state). Once ROS is shut down (Ctrl-C)
        the state machine cannot announce a transition any more; the safe state is entered
        all the same."""
        if self.lifecycle_state == "finalized":
            return
        if self.context.ok():
            self.trigger_shutdown()
        if self.lifecycle_state != "finalized":
            self.safe_state("shutdown")
            self.lifecycle_state = "finalized"


def spin_until(executor: SingleThreadedExecutor, keep_going: Callable[[], bool]) -> None:
    """Spin until keep_going() is false or ROS shuts down. Callbacks are guarded by the node;
    an exception that still arrives here (from rclpy itself) is logged, and spinning goes on."""
    while keep_going():
        try:
            executor.spin_once(timeout_sec=0.1)
        except (ShutdownException, ExternalShutdownException, KeyboardInterrupt):
            return
        except Exception:      # noqa: BLE001
            if not keep_going():
                return
            for node in executor.get_nodes():
                node.get_logger().error(f"executor error:\n{traceback.format_exc()}")


def freeze_long_lived_objects() -> None:
    """Keep the cyclic garbage collector off what startup built. The imports (torch,
    transformers, pinocchio, mujoco, rclpy) and a model leave ~400 k long-lived objects; a full
    collection of them took 0.28 s on a 2-core CPU (0.35-0.74 s under load), holding the
    interpreter the whole time: the policy's 20 Hz control loop stopped for as long. Frozen,
    they are never scanned again; what the node creates later is collected as usual."""
    gc.collect()
    gc.freeze()


class StopRequest:
    """SIGINT / SIGTERM (Ctrl-C, ros2 launch, the process runner) as a request to stop spinning.
    rclpy's own handlers shut the ROS context down at once, so the node's safe close() then ran
    without ROS: its lifecycle shutdown transition could not be announced and its last log lines
    failed to reach /rosout ("publisher's context is invalid"). A second signal interrupts
    whatever runs (a close that hangs)."""

    def __init__(self):
        self.requested = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def run_node(make_node: Callable[[], TwinvlaNode], args=None, setup_process: Callable[[], None] | None = None) -> None:
    """A node process's main: process-wide setup, spin until Ctrl-C, then the node's safe
    close() while ROS is still up."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest()
    if setup_process is not None:
        setup_process()
    try:
        node = make_node()
        if isinstance(node, TwinvlaLifecycleNode) and node.autostart:
            try:
                node.bring_up()
            except StartupError:
                node.close()
                node.destroy_node()
                raise
    except Exception as error:  # noqa: BLE001 -- a node that cannot start says why and exits non-zero
        get_logger("twinvla_ros").fatal(f"not started: {type(error).__name__}: {error}")
        rclpy.try_shutdown()
        raise SystemExit(1) from None
    except KeyboardInterrupt:   # a second Ctrl-C during start-up (a stop request waits for it)
        rclpy.try_shutdown()
        raise SystemExit(130) from None
    freeze_long_lived_objects()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until(executor, lambda: rclpy.ok() and not stop.requested)
    except KeyboardInterrupt:
        pass
    finally:
        node.close()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
