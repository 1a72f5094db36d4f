"""Build the MuJoCo model of Anubis at a table: the URDF plus a scene per task.

The robot comes from `urdf/anubis.urdf` (generated from config/anubis.yaml) through
`mujoco.MjSpec`; its `<mujoco><compiler fusestatic="false"/>` keeps every fixed frame as a body,
so the URDF frame names (`right_eef`, `ego_camera_color_optical_frame`, ...) exist in MuJoCo.
On top of that this module adds what a URDF cannot say:

- position actuators on the 12 arm joints and the 2 gripper joints, force-limited from the
  yaml efforts, with gravity compensation routed through the actuators (a servo's integral
  term in steady state; it is clamped by the same force limit and vanishes with torque off);
- reflected rotor inertia (armature) and damping so the arm is stable at a 2 ms step;
- the gripper mimic (finger 2 = finger 1) as one stiff joint equality (MuJoCo 3.17's URDF
  importer makes an unnamed soft one from <mimic>, older versions none: named or added here);
- high-friction finger pads (condim 4) so a closed gripper holds and lifts a 50-100 g box;
- contact exclusions between arm links that overlap by construction;
- floor, table, lights, graspable objects with free joints, and the three cameras.

Every scene number is a named constant below; the robot's numbers come from the yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np
import yaml

from twinvla_ros.paths import config_path, urdf_path

SIDES = ("left", "right")

# --- Table (world frame = base_link; x forward, z up) -----------------------------------------
# From config/anubis.yaml, which the arm driver's workspace floor also comes from. Just below
# the shoulders (0.823 m): the grasp point reaches z -0.05..0.3 above the shoulder plane with
# the gripper pointing down, so boxes on a 0.80 m table are graspable.
_TABLE = yaml.safe_load(config_path("anubis.yaml").read_text())["table"]
TABLE_TOP_Z = float(_TABLE["top_z"])
TABLE_X = tuple(float(v) for v in _TABLE["x"])
TABLE_Y = tuple(float(v) for v in _TABLE["y"])
TABLE_THICKNESS = 0.03
TABLE_LEG_RADIUS = 0.025

# --- Actuators --------------------------------------------------------------------------------
# Position servo gains per arm joint (N m/rad, N m s/rad). With gravity compensated, kp sets
# the stiffness against contacts and payload: 0.1 kg at 0.6 m (0.6 N m) moves joint 2 by
# ~2 mrad at 300 N m/rad. kv is about critical damping for the joint's inertia at home.
ARM_KP = (300.0, 300.0, 300.0, 200.0, 60.0, 60.0)
ARM_KV = (20.0, 20.0, 15.0, 10.0, 2.0, 2.0)
# Reflected rotor inertia of a geared servo (kg m^2): keeps the light distal links (a few
# grams) well conditioned at a 2 ms step; of the order of a Dynamixel XM430's (rotor
# ~1e-6 kg m^2 times a gear ratio of ~350 squared).
ARM_ARMATURE = (0.1, 0.1, 0.08, 0.05, 0.02, 0.02)
# Gripper: a current-limited position servo, like ALOHA's follower grippers (current-based
# position mode with a current limit). kp in N/m of finger travel; the force limit (yaml
# gripper.effort) saturates once the fingers meet an object 1 cm before their target.
GRIPPER_KP = 2000.0
GRIPPER_KV = 40.0
GRIPPER_ARMATURE = 0.2          # kg, reflected inertia of the gripper motor on the finger
GRIPPER_DAMPING = 5.0           # N s/m
MIMIC_TIMECONST = 0.005         # s, solref of the finger-2 = finger-1 equality

# --- Contacts ---------------------------------------------------------------------------------
# Finger pads: rubber-like. Sliding friction 1.5, torsional friction so a held box does not
# spin about the grasp axis (condim 4), elliptic cones + impratio for grasps that do not creep.
FINGER_FRICTION = (1.5, 0.01, 0.0001)
FINGER_CONDIM = 4
OBJECT_FRICTION = (1.0, 0.005, 0.0001)
OBJECT_CONDIM = 4
IMPRATIO = 10.0

# --- Cameras ----------------------------------------------------------------------------------
# Vertical fields of view (deg). Wrist: a RealSense D405 (87 x 58 deg). Ego: wider than a
# D435's colour imager (69 x 42) so that, from the mount in config/anubis.yaml, the whole
# table and both grippers (also at home, high above the table) are in view.
WRIST_FOVY = 58.0
EGO_FOVY = 78.0
CAMERA_NEAR = 0.01              # m: the wrist camera sees its fingers from ~6 cm

# Logical camera name (topic) -> URDF optical frame (ROS optical convention: z forward,
# x right, y down). The MuJoCo camera looks along its -z with +y up: the optical frame turned
# 180 deg about x, i.e. quaternion (w, x, y, z) = (0, 1, 0, 0).
CAMERA_FRAMES = {
    "ego": "ego_camera_color_optical_frame",
    "wrist_left": "left_wrist_camera_color_optical_frame",
    "wrist_right": "right_wrist_camera_color_optical_frame",
}
CAMERA_FOVY = {"ego": EGO_FOVY, "wrist_left": WRIST_FOVY, "wrist_right": WRIST_FOVY}

# --- Colours ----------------------------------------------------------------------------------
RGBA_ROBOT = (0.75, 0.75, 0.78, 1.0)
RGBA_GRIPPER = (0.22, 0.22, 0.25, 1.0)
RGBA_FINGER = (0.08, 0.08, 0.08, 1.0)
RGBA_TABLE = (0.62, 0.48, 0.33, 1.0)
RGBA_FLOOR = (0.35, 0.36, 0.38, 1.0)
RGBA_WALL = (0.80, 0.82, 0.85, 1.0)


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable box with a free joint, spawned at a random pose on the table top."""

    name: str
    half_size: tuple[float, float, float]     # m
    mass: float                               # kg
    rgba: tuple[float, float, float, float]
    x_range: tuple[float, float]              # world x of the centre, m
    y_range: tuple[float, float]              # world y of the centre, m
    yaw_range: tuple[float, float] = (-np.pi / 4, np.pi / 4)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    instruction: str                          # the language instruction of its demonstrations
    objects: tuple[ObjectSpec, ...] = field(default_factory=tuple)


# Spawn regions: where a top-down grasp of a box on the table is reachable. With this
# kinematics (joint 3 stops at 110 deg) the grasp point reaches table height with the gripper
# pointing down only in a band about world x 0.22..0.33 (eef_reference x 0.31..0.43), for
# |y| up to ~0.35; closer to the torso the arm cannot fold enough.
_BOX = dict(half_size=(0.02, 0.02, 0.025), mass=0.08, rgba=(0.85, 0.12, 0.10, 1.0))
TASKS: dict[str, TaskSpec] = {
    "handover_box": TaskSpec(
        "handover_box",
        "a red box in front of the right arm; hand it over and put it on the green pad on the left",
        "hand over the box",
        (
            ObjectSpec("box", x_range=(0.24, 0.30), y_range=(-0.30, -0.12), **_BOX),
            ObjectSpec("target_pad", half_size=(0.05, 0.05, 0.004), mass=0.05,
                       rgba=(0.15, 0.65, 0.25, 1.0), x_range=(0.24, 0.30),
                       y_range=(0.15, 0.28), yaw_range=(0.0, 0.0)),
        ),
    ),
    "lift_box": TaskSpec(
        "lift_box",
        "one red box in front of the right arm; pick it up",
        "pick up the red box",
        (ObjectSpec("box", x_range=(0.24, 0.30), y_range=(-0.30, -0.12), **_BOX),),
    ),
    # lift_box with the box's pose drawn from a small patch (1.2 x 1.6 cm, yaw +-7.5 deg): a
    # policy that does not locate the box in its cameras still grasps it anywhere in the patch
    # (the open fingers leave ~15 mm either side). The task of the CPU-trained default policy;
    # the full range needs one that locates the box (bench/RESULTS.md).
    "lift_box_narrow": TaskSpec(
        "lift_box_narrow",
        "one red box in a small patch in front of the right arm; pick it up",
        "pick up the red box",
        (ObjectSpec("box", x_range=(0.264, 0.276), y_range=(-0.218, -0.202),
                    yaw_range=(-np.pi / 24, np.pi / 24), **_BOX),),
    ),
    "empty": TaskSpec("empty", "the table without objects", "move both arms"),
}


def task_spec(task: str) -> TaskSpec:
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown sim task {task!r}; known tasks: {', '.join(sorted(TASKS))}") from None


@dataclass(frozen=True)
class SceneInfo:
    """What the runtime needs to know about the model it got."""

    task: TaskSpec
    joint_names: tuple[str, ...]              # /joint_states order: left 1..6, left_gripper, right ...
    home: dict[str, float]                    # joint -> home position (grippers open)
    camera_frames: dict[str, str]             # logical camera -> URDF optical frame
    gripper_stroke: float


def robot_config(path: Path | None = None) -> dict:
    return yaml.safe_load(Path(path or config_path("anubis.yaml")).read_text())


def joint_names(cfg: dict) -> tuple[str, ...]:
    names: list[str] = []
    for side in SIDES:
        names += [f"{side}_{n}" for n in cfg["joint_names"]] + [f"{side}_gripper"]
    return tuple(names)


# Body pairs of one arm whose collision shapes overlap by construction (MuJoCo already skips
# parent-child pairs). The elbow link4 is 4 cm long and link6 2 cm, both thinner than their
# neighbours' radii, so link3/link5 and link4/link6 intersect at almost any elbow angle, and
# link6 sits inside the gripper base box. Measured over 3000 random configurations without
# exclusions: these pairs touched in 18-72 % of them (link3/link5 in 72 %), all others only in
# folded poses that would be real self-collisions (gripper base against link3), which stay on.
_OVERLAPPING_PAIRS = (
    ("link3", "link5"), ("link3", "link6"), ("link4", "link6"), ("link4", "gripper_base"),
    # The fingers slide against each other at zero opening (their joint limit stops them).
    ("finger1", "finger2"),
)


def _add_contact_exclusions(spec: mujoco.MjSpec) -> None:
    for side in SIDES:
        for a, b in _OVERLAPPING_PAIRS:
            spec.add_exclude(bodyname1=f"{side}_{a}", bodyname2=f"{side}_{b}")


def _style_robot(spec: mujoco.MjSpec) -> None:
    """URDF visuals are discarded by the compiler: colour the collision geoms instead."""
    for geom in spec.geoms:
        body = geom.parent.name
        if "finger" in body:
            geom.rgba = RGBA_FINGER
            geom.friction = FINGER_FRICTION
            geom.condim = FINGER_CONDIM
            geom.priority = 1          # the pad's friction and condim win against any object
        elif "gripper_base" in body:
            geom.rgba = RGBA_GRIPPER
        else:
            geom.rgba = RGBA_ROBOT


def _add_actuators(spec: mujoco.MjSpec, cfg: dict) -> None:
    effort = cfg["joint_effort"]
    g = cfg["gripper"]
    for side in SIDES:
        for i, jname in enumerate(cfg["joint_names"]):
            name = f"{side}_{jname}"
            joint = spec.joint(name)
            joint.armature = ARM_ARMATURE[i]
            joint.actfrclimited = True
            joint.actfrcrange = [-effort[i], effort[i]]
            joint.actgravcomp = True
            act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
            act.set_to_position(kp=ARM_KP[i], kv=ARM_KV[i])
            act.ctrllimited = True
            act.ctrlrange = list(joint.range)
            act.forcelimited = True
            act.forcerange = [-effort[i], effort[i]]
        for jname in (f"{side}_gripper", f"{side}_gripper_mimic"):
            joint = spec.joint(jname)
            joint.armature = GRIPPER_ARMATURE
            joint.damping = [GRIPPER_DAMPING, 0.0, 0.0]
        name = f"{side}_gripper"
        joint = spec.joint(name)
        joint.actfrclimited = True
        joint.actfrcrange = [-g["effort"], g["effort"]]
        joint.actgravcomp = True
        act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=GRIPPER_KP, kv=GRIPPER_KV)
        act.ctrllimited = True
        act.ctrlrange = [0.0, g["stroke"]]
        act.forcelimited = True
        act.forcerange = [-g["effort"], g["effort"]]
        _ensure_mimic_equality(spec, f"{side}_gripper_mimic", f"{side}_gripper")
    # Gravity compensation on every moving robot body, applied through the actuators above.
    for body in spec.bodies:
        if body.name.startswith(SIDES):
            body.gravcomp = 1.0


def _ensure_mimic_equality(spec: mujoco.MjSpec, mimic: str, leader: str) -> None:
    """URDF <mimic>: finger 2 travels exactly as finger 1. MuJoCo >= 3.x's URDF importer
    already turns <mimic> into an (unnamed) joint equality; older ones ignore it. Name the
    imported one, or add it, so there is exactly one."""
    for eq in spec.equalities:
        if eq.type == mujoco.mjtEq.mjEQ_JOINT and (eq.name1, eq.name2) == (mimic, leader):
            eq.name = eq.name or mimic
            break
    else:
        eq = spec.add_equality(name=mimic, type=mujoco.mjtEq.mjEQ_JOINT, name1=mimic,
                               name2=leader, data=[0, 1] + [0] * 10)   # q_mimic = q_leader
    # Stiffer than the default (0.02 s): under a 20 N grip the fingers stay symmetric to
    # ~0.1 mm instead of ~1.6 mm. 5 ms is still > 2 timesteps at the default 2 ms.
    eq.solref = [MIMIC_TIMECONST, 1.0]


def _add_environment(spec: mujoco.MjSpec) -> None:
    world = spec.worldbody
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[4, 4, 0.1],
                   rgba=RGBA_FLOOR)
    # A wall 2 m in front of the robot: a background for the ego camera (visual only).
    world.add_geom(name="wall", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.05, 4, 1.5],
                   pos=[2.0, 0, 1.5], rgba=RGBA_WALL, contype=0, conaffinity=0)
    x0, x1 = TABLE_X
    y0, y1 = TABLE_Y
    table = world.add_body(name="table", pos=[(x0 + x1) / 2, (y0 + y1) / 2, TABLE_TOP_Z])
    table.add_geom(name="table_top", type=mujoco.mjtGeom.mjGEOM_BOX,
                   size=[(x1 - x0) / 2, (y1 - y0) / 2, TABLE_THICKNESS / 2],
                   pos=[0, 0, -TABLE_THICKNESS / 2], rgba=RGBA_TABLE, friction=[0.8, 0.005, 0.0001])
    leg_len = TABLE_TOP_Z - TABLE_THICKNESS
    for sx in (-1, 1):
        for sy in (-1, 1):
            table.add_geom(
                type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[TABLE_LEG_RADIUS, leg_len / 2, 0],
                pos=[sx * ((x1 - x0) / 2 - 0.05), sy * ((y1 - y0) / 2 - 0.05),
                     -TABLE_THICKNESS - leg_len / 2],
                rgba=RGBA_TABLE, contype=0, conaffinity=0)
    # A key light from above-front and a fill from behind the robot; no shadows (speed).
    world.add_light(name="key", pos=[0.4, 0.0, 2.2], dir=[-0.2, 0.0, -1.0], castshadow=False,
                    diffuse=[0.7, 0.7, 0.7], specular=[0.1, 0.1, 0.1], ambient=[0.15, 0.15, 0.15])
    world.add_light(name="fill", pos=[-0.8, 0.0, 1.8], dir=[1.0, 0.0, -0.6], castshadow=False,
                    diffuse=[0.35, 0.35, 0.35], specular=[0, 0, 0])


def _add_objects(spec: mujoco.MjSpec, task: TaskSpec) -> None:
    # Parked off the table; SimWorld.reset places them (seeded).
    for i, obj in enumerate(task.objects):
        body = spec.worldbody.add_body(name=obj.name, pos=[1.0 + 0.2 * i, 0.0, obj.half_size[2]])
        body.add_freejoint(name=obj.name)
        body.add_geom(name=obj.name, type=mujoco.mjtGeom.mjGEOM_BOX, size=list(obj.half_size),
                      mass=obj.mass, rgba=obj.rgba, friction=OBJECT_FRICTION, condim=OBJECT_CONDIM)


def _add_cameras(spec: mujoco.MjSpec) -> None:
    for name, frame in CAMERA_FRAMES.items():
        spec.body(frame).add_camera(name=name, quat=[0, 1, 0, 0], fovy=CAMERA_FOVY[name])


def build_spec(task: str = "handover_box", *, urdf: Path | None = None, cfg: dict | None = None,
               timestep: float = 0.002, image_width: int = 320, image_height: int = 240,
               antialias: bool = False) -> mujoco.MjSpec:
    spec_task = task_spec(task)
    cfg = cfg or robot_config()
    spec = mujoco.MjSpec.from_file(str(urdf or urdf_path()))
    spec.modelname = f"anubis_{task}"
    # The URDF's <compiler discardvisual="true"/> already dropped its visuals while parsing;
    # left on, the compiler would also drop the scene's visual-only geoms (table legs, wall).
    spec.compiler.discardvisual = False

    spec.option.timestep = timestep
    spec.option.gravity = [0, 0, -9.81]
    # implicitfast integrates the servo and joint damping implicitly: stable stiff servos.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = IMPRATIO

    spec.visual.global_.offwidth = max(int(image_width), 1)
    spec.visual.global_.offheight = max(int(image_height), 1)
    spec.visual.quality.shadowsize = 0
    # Multisampling costs more than everything else in these scenes on a software rasteriser:
    # three cameras at 480x640 render ~2.5x faster without it (measured 50 vs 18 frames/s).
    spec.visual.quality.offsamples = 4 if antialias else 0
    spec.visual.headlight.ambient = [0.25, 0.25, 0.25]
    spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]

    _style_robot(spec)
    _add_contact_exclusions(spec)
    _add_actuators(spec, cfg)
    _add_environment(spec)
    _add_objects(spec, spec_task)
    _add_cameras(spec)
    return spec


def build_model(task: str = "handover_box", *, urdf: Path | None = None, cfg: dict | None = None,
                timestep: float = 0.002, image_width: int = 320, image_height: int = 240,
                antialias: bool = False) -> tuple[mujoco.MjModel, SceneInfo]:
    cfg = cfg or robot_config()
    spec = build_spec(task, urdf=urdf, cfg=cfg, timestep=timestep, image_width=image_width,
                      image_height=image_height, antialias=antialias)
    model = spec.compile()
    # Clip planes are relative to the model extent: make the near plane an absolute distance.
    model.vis.map.znear = CAMERA_NEAR / model.stat.extent
    model.vis.map.zfar = 10.0 / model.stat.extent
    names = joint_names(cfg)
    home: dict[str, float] = {}
    for side in SIDES:
        for n, q in zip(cfg["joint_names"], cfg["home"][side]):
            home[f"{side}_{n}"] = float(q)
        home[f"{side}_gripper"] = float(cfg["gripper"]["stroke"])   # open
    info = SceneInfo(task=task_spec(task), joint_names=names, home=home,
                     camera_frames=dict(CAMERA_FRAMES), gripper_stroke=float(cfg["gripper"]["stroke"]))
    return model, info
