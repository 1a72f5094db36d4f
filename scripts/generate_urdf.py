#!/usr/bin/env python3
"""Generate urdf/anubis.urdf from config/anubis.yaml.

The YAML is the one place the robot's numbers live; the URDF is derived from it (like a xacro)
so that MuJoCo, pinocchio, RViz and the arm driver see the same robot. test_description.py
checks that the committed URDF matches this script's output.

    python scripts/generate_urdf.py            # rewrite urdf/anubis.urdf
    python scripts/generate_urdf.py --check    # exit 1 if the committed file is stale
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parent.parent


def fmt(values) -> str:
    return " ".join(f"{float(v):.9g}" for v in values)


def box_inertia(mass, size):
    x, y, z = size
    return [mass * (y * y + z * z) / 12, mass * (x * x + z * z) / 12, mass * (x * x + y * y) / 12]


def cylinder_inertia(mass, radius, length):
    side = mass * (3 * radius * radius + length * length) / 12
    return [side, side, mass * radius * radius / 2]


def inertial(mass, com, diag) -> str:
    ixx, iyy, izz = diag
    return (
        f'    <inertial>\n      <origin xyz="{fmt(com)}" rpy="0 0 0"/>\n'
        f'      <mass value="{mass:.9g}"/>\n'
        f'      <inertia ixx="{ixx:.9g}" ixy="0" ixz="0" iyy="{iyy:.9g}" iyz="0" izz="{izz:.9g}"/>\n'
        "    </inertial>\n"
    )


def shape(kind, geometry, xyz, rpy=(0, 0, 0), material=None) -> str:
    mat = f'\n      <material name="{material}"/>' if material and kind == "visual" else ""
    return (
        f'    <{kind}>\n      <origin xyz="{fmt(xyz)}" rpy="{fmt(rpy)}"/>\n'
        f"      <geometry>{geometry}</geometry>{mat}\n    </{kind}>\n"
    )


def link(name, body="") -> str:
    return f'  <link name="{name}">\n{body}  </link>\n' if body else f'  <link name="{name}"/>\n'


def joint(name, kind, parent, child, xyz, rpy, axis=None, limit=None, extra="") -> str:
    out = f'  <joint name="{name}" type="{kind}">\n'
    out += f'    <parent link="{parent}"/>\n    <child link="{child}"/>\n'
    out += f'    <origin xyz="{fmt(xyz)}" rpy="{fmt(rpy)}"/>\n'
    if axis is not None:
        out += f'    <axis xyz="{fmt(axis)}"/>\n'
    if limit is not None:
        lower, upper, effort, velocity = limit
        out += (
            f'    <limit lower="{lower:.9g}" upper="{upper:.9g}" effort="{effort:.9g}" '
            f'velocity="{velocity:.9g}"/>\n'
        )
    return out + extra + "  </joint>\n"


def camera_frames(prefix, parent, xyz, rpy) -> str:
    """A realsense-ros style camera: <prefix>_link (x forward, z up) and the optical frame."""
    out = link(f"{prefix}_link")
    out += joint(f"{prefix}_joint", "fixed", parent, f"{prefix}_link", xyz, rpy)
    out += link(f"{prefix}_color_optical_frame")
    out += joint(
        f"{prefix}_color_optical_joint", "fixed", f"{prefix}_link",
        f"{prefix}_color_optical_frame", (0, 0, 0), (-np.pi / 2, 0, -np.pi / 2),
    )
    return out


def arm(side: str, cfg: dict) -> str:
    spec = cfg["arms"][side]
    names = [f"{side}_{n}" for n in cfg["joint_names"]]
    offsets = [0.0] + list(cfg["link_offsets_z"])   # origin of joint i in link i-1
    out = ""
    parent = cfg["base_frame"]
    for i in range(6):
        child = f"{side}_link{i + 1}"
        xyz = spec["shoulder_xyz"] if i == 0 else (0, 0, offsets[i])
        rpy = spec["shoulder_rpy"] if i == 0 else spec["joint_origins_rpy"][i]
        limit = (cfg["joint_lower"][i], cfg["joint_upper"][i], cfg["joint_effort"][i],
                 cfg["joint_velocity"][i])
        out += joint(names[i], "revolute", parent, child, xyz, rpy, spec["axes"][i], limit,
                     f'    <dynamics damping="{cfg["joint_damping"]:.9g}"/>\n')
        # Each link is a cylinder from its joint to the next joint along z.
        length = offsets[i + 1] if i < 5 else 0.02
        radius, mass = cfg["link_radii"][i], cfg["link_masses"][i]
        geom = f'<cylinder radius="{radius:.9g}" length="{length:.9g}"/>'
        centre = (0, 0, length / 2)
        body = inertial(mass, centre, cylinder_inertia(mass, radius, length))
        body += shape("visual", geom, centre, material="anubis_grey")
        # The first link rotates about the shoulder in the torso: no collision for it.
        if i > 0:
            body += shape("collision", geom, centre)
        out += link(child, body)
        parent = child

    g = cfg["gripper"]
    base = f"{side}_gripper_base"
    size = g["base_size"]
    centre = (0, 0, size[2] / 2)
    body = inertial(g["base_mass"], centre, box_inertia(g["base_mass"], size))
    geom = f'<box size="{fmt(size)}"/>'
    body += shape("visual", geom, centre, material="anubis_dark") + shape("collision", geom, centre)
    out += joint(f"{side}_gripper_base_joint", "fixed", parent, base, (0, 0, 0), (0, 0, 0))
    out += link(base, body)

    # Two fingers close along x; finger 1 is actuated, finger 2 mimics it.
    fsize = g["finger_size"]
    fgeom = f'<box size="{fmt(fsize)}"/>'
    for finger, sign, jname in ((1, 1, f"{side}_gripper"), (2, -1, f"{side}_gripper_mimic")):
        fname = f"{side}_finger{finger}"
        centre = (sign * fsize[0] / 2, 0, 0)
        body = inertial(g["finger_mass"], centre, box_inertia(g["finger_mass"], fsize))
        body += shape("visual", fgeom, centre, material="anubis_dark")
        body += shape("collision", fgeom, centre)
        mimic = f'    <mimic joint="{side}_gripper" multiplier="1" offset="0"/>\n' if finger == 2 else ""
        out += joint(jname, "prismatic", base, fname, (0, 0, g["finger_z"]), (0, 0, 0),
                     (sign, 0, 0), (0.0, g["stroke"], g["effort"], g["velocity"]), mimic)
        out += link(fname, body)

    out += joint(f"{side}_eef_joint", "fixed", base, f"{side}_eef", (0, 0, g["tcp_z"]), (0, 0, 0))
    out += link(f"{side}_eef")

    # Wrist camera: beside the fingers, x (view direction) along the tool axis, tilted
    # towards the fingers. The left camera sits on the mirrored side.
    w = cfg["cameras"]["wrist"]
    y_side = w["xyz"][1] * (1 if side == "left" else -1)
    tilt = w["tilt_towards_fingers"] * (-1 if side == "left" else 1)
    roll = np.pi / 2 * (-1 if side == "left" else 1)
    rot = Rotation.from_euler("y", -np.pi / 2) * Rotation.from_euler("z", tilt) * Rotation.from_euler("x", roll)
    rpy = rot.as_euler("xyz")
    out += camera_frames(f"{side}_wrist_camera", base, (w["xyz"][0], y_side, w["xyz"][2]), rpy)
    return out


def generate(cfg: dict) -> str:
    t = cfg["torso"]
    body = inertial(t["mass"], t["centre"], box_inertia(t["mass"], t["size"]))
    geom = f'<box size="{fmt(t["size"])}"/>'
    body += shape("visual", geom, t["centre"], material="anubis_grey")
    body += shape("collision", geom, t["centre"])
    out = (
        '<?xml version="1.0"?>\n'
        "<!-- Generated by scripts/generate_urdf.py from config/anubis.yaml: edit those, not this. -->\n"
        '<robot name="anubis">\n'
        "  <mujoco>\n"
        '    <compiler discardvisual="true" fusestatic="false" balanceinertia="true"/>\n'
        "  </mujoco>\n"
        '  <material name="anubis_grey"><color rgba="0.75 0.75 0.78 1"/></material>\n'
        '  <material name="anubis_dark"><color rgba="0.2 0.2 0.22 1"/></material>\n'
    )
    out += link(cfg["base_frame"], body)
    out += link(cfg["reference_frame"])
    out += joint("eef_reference_joint", "fixed", cfg["base_frame"], cfg["reference_frame"],
                 cfg["reference_offset"], (0, 0, 0))
    ego = cfg["cameras"]["ego"]
    out += camera_frames("ego_camera", ego["parent"], ego["xyz"], ego["rpy"])
    for side in ("left", "right"):
        out += arm(side, cfg)
    return out + "</robot>\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "anubis.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "urdf" / "anubis.urdf")
    parser.add_argument("--check", action="store_true", help="fail if --out is not up to date")
    args = parser.parse_args(argv)
    text = generate(yaml.safe_load(args.config.read_text()))
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run scripts/generate_urdf.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
