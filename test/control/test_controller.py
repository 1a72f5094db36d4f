"""ArmController against a kinematic plant (the motors reach each command by the next tick)."""
import numpy as np
import pytest

from twinvla_ros.hardware.motors import BusReading
from twinvla_ros.control.controller import ArmController, Mode
from twinvla_ros.reporting import Level
from twinvla_ros.control.safety import SafetyLimits
from twinvla_ros.robot.rotations import rotation_angle_between

RATE = 100.0
DT = 1.0 / RATE


class Plant:
    """Ideal position-controlled motors: the measured joints equal the last command."""

    def __init__(self, controller, q0):
        self.controller = controller
        self.q = np.append(q0, 0.02)
        self.t = 0.0
        self.outputs = []

    def tick(self, n=1, fresh=True):
        for _ in range(n):
            self.t += DT
            reading = BusReading(self.q.copy(), np.zeros(7), np.zeros(7), self.t if fresh else 0.0)
            out = self.controller.update(self.t, reading)
            self.outputs.append(None if out is None else out.copy())
            if out is not None:
                self.q = out

    def pose(self):
        return self.controller.kinematics.fk(self.q[:6])


@pytest.fixture
def rig(description, kinematics):
    limits = SafetyLimits()
    base_to_ref = np.linalg.inv(kinematics.reference_in_base())
    controller = ArmController(description.arms["right"], kinematics, limits, servo_rate=RATE,
                               reference_frame="eef_reference", base_to_reference=base_to_ref)
    plant = Plant(controller, description.arms["right"].home)
    plant.tick()
    return controller, plant


def _shifted(pose, dx=0.0, dy=0.0, dz=0.0):
    out = pose.copy()
    out[:3, 3] += (dx, dy, dz)
    return out


def test_first_tick_holds_where_the_arm_is(rig, description):
    controller, plant = rig
    np.testing.assert_array_equal(plant.outputs[0][:6], description.arms["right"].home)
    assert controller.mode == Mode.HOLD


def test_far_target_is_reached_without_any_step_above_the_limits(rig, description):
    controller, plant = rig
    start = plant.pose()
    target = _shifted(start, dx=0.12, dy=-0.08, dz=-0.15)
    steps, eef_steps = [], []
    previous = plant.q.copy()
    for _ in range(150):                 # 1.5 s of 20 Hz targets, each repeated
        assert controller.command_eef(target, "eef_reference", plant.t) is None
        for _ in range(5):
            pose_before = plant.pose()
            plant.tick()
            steps.append(np.abs(plant.q[:6] - previous[:6]))
            eef_steps.append(np.linalg.norm(plant.pose()[:3, 3] - pose_before[:3, 3]))
            previous = plant.q.copy()
    max_step = description.arms["right"].velocity * controller.limits.joint_velocity_scale * DT
    assert np.max(np.array(steps) - max_step) <= 1e-12
    assert max(eef_steps) <= controller.limits.max_eef_speed * DT + 1e-3
    reached = plant.pose()
    assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) < 0.002
    assert rotation_angle_between(reached[:3, :3], target[:3, :3]) < np.deg2rad(1)
    assert controller.status().level == Level.OK


def test_targets_in_base_link_are_converted(rig, kinematics):
    controller, plant = rig
    target_ref = _shifted(plant.pose(), dz=0.03)
    target_base = kinematics.reference_in_base() @ target_ref
    for _ in range(60):
        controller.command_eef(target_base, "base_link", plant.t)
        plant.tick(2)
    assert np.linalg.norm(plant.pose()[:3, 3] - target_ref[:3, 3]) < 0.002


@pytest.mark.parametrize("pose, frame, reason", [
    (np.full((4, 4), np.nan), "eef_reference", "NaN"),
    (np.diag([1.0, 2.0, 1.0, 1.0]), "eef_reference", "not a rotation"),
    (np.eye(4), "camera_frame", "not one of"),
])
def test_bad_targets_are_rejected_without_motion(rig, pose, frame, reason):
    controller, plant = rig
    q_before = plant.q.copy()
    assert reason in controller.command_eef(pose, frame, plant.t)
    plant.tick(20)
    np.testing.assert_array_equal(plant.q, q_before)
    assert controller.counters["rejected"] == 1
    assert reason in controller.last_rejection
    assert any("rejected EEF target" in e for _, e in controller.drain_events())


def test_stale_commands_hold_position(rig):
    controller, plant = rig
    target = _shifted(plant.pose(), dx=0.2)
    controller.command_eef(target, "eef_reference", plant.t)
    plant.tick(int(controller.limits.stale_timeout * RATE) + 5)
    held = plant.q.copy()
    plant.tick(50)
    np.testing.assert_array_equal(plant.q, held)
    assert controller.mode == Mode.HOLD
    assert controller.status().level == Level.WARN and "stale" in controller.status().message
    # Not at the far target: it stopped on the way.
    assert np.linalg.norm(plant.pose()[:3, 3] - target[:3, 3]) > 0.05


def test_estop_stops_latches_and_needs_clearing(rig):
    controller, plant = rig
    target = _shifted(plant.pose(), dz=-0.15)
    controller.command_eef(target, "eef_reference", plant.t)
    plant.tick(5)
    controller.engage_estop()
    plant.tick()
    stopped = plant.q.copy()
    assert "e-stop" in controller.command_eef(target, "eef_reference", plant.t)
    for _ in range(30):
        controller.command_eef(target, "eef_reference", plant.t)
        plant.tick()
    np.testing.assert_array_equal(plant.q, stopped)
    assert controller.status().level == Level.ERROR
    controller.clear_estop()
    plant.tick(10)
    np.testing.assert_array_equal(plant.q, stopped)       # still holding: no old target replayed
    assert controller.command_eef(target, "eef_reference", plant.t) is None
    plant.tick(10)
    assert np.abs(plant.q - stopped).max() > 0


def test_unreachable_target_goes_to_nearest_and_reports(rig):
    controller, plant = rig
    # Inside the workspace box but outside the arm's reach with this orientation.
    target = _shifted(plant.pose(), dx=0.25, dy=0.3, dz=-0.1)
    for _ in range(200):
        controller.command_eef(target, "eef_reference", plant.t)
        plant.tick(2)
    status = controller.status()
    assert status.level == Level.WARN and "unreachable" in status.message
    assert controller.counters["unreachable_ticks"] > 0
    assert any("unreachable" in e for _, e in controller.drain_events())
    assert controller.kinematics.within_limits(plant.q[:6])


def test_workspace_box_clamps_targets(rig):
    controller, plant = rig
    target = _shifted(plant.pose(), dz=-1.0)                  # far below the table
    controller.command_eef(target, "eef_reference", plant.t)
    assert controller.counters["workspace_clamped"] == 1
    segment_end = controller._segment[1]
    assert segment_end[2, 3] == pytest.approx(controller.limits.workspace_min[2])


def test_bus_silence_writes_nothing_and_reports_error(rig):
    controller, plant = rig
    plant.t += 1.0
    plant.tick(5, fresh=False)
    assert plant.outputs[-1] is None
    status = controller.status()
    assert status.level == Level.ERROR and "no joint state" in status.message


def test_gripper_is_rate_limited_and_clamped(rig, description):
    controller, plant = rig
    stroke = description.arms["right"].gripper_stroke
    controller.command_gripper(5.0, plant.t)                  # clamps to fully open
    plant.tick()
    step = controller.limits.max_gripper_speed * DT * stroke
    assert plant.q[6] == pytest.approx(0.02 + step)
    plant.tick(200)
    assert plant.q[6] == pytest.approx(stroke)
    assert "NaN" in controller.command_gripper(float("nan"), plant.t)


def test_joint_commands_and_go_home(rig, description):
    controller, plant = rig
    arm = description.arms["right"]
    wanted = arm.upper + 0.5                                   # beyond the limits
    for _ in range(200):                                       # a 50 Hz teleop stream
        controller.command_joints(wanted, plant.t)
        plant.tick(2)
    np.testing.assert_allclose(plant.q[:6], arm.upper, atol=1e-9)
    controller.go_home(plant.t)
    plant.tick(1500)
    np.testing.assert_allclose(plant.q[:6], arm.home, atol=1e-9)
    assert controller.mode == Mode.HOLD


def test_disabled_arm_ignores_commands_and_resyncs(rig):
    controller, plant = rig
    controller.set_enabled(False)
    assert "disabled" in controller.command_eef(plant.pose(), "eef_reference", plant.t)
    plant.tick(3)
    assert plant.outputs[-1] is None
    plant.q[:6] += 0.05                                        # someone moved the arm by hand
    controller.set_enabled(True)
    plant.tick()
    np.testing.assert_array_equal(plant.outputs[-1], plant.q)  # resumes where the arm is
