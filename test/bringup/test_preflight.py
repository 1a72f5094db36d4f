"""The real-robot graph without its hardware: one error naming every missing port and camera
serial, before any node exists, from the runners and the CLI alike."""
import os
import tty

import pytest
import yaml

from twinvla_ros.bringup.graph import anubis_policy, sim_robot
from twinvla_ros.bringup.preflight import HardwareMissing, missing_hardware, require_hardware
from twinvla_ros.bringup.runner import GraphRunner, ProcessGraphRunner
from twinvla_ros.paths import config_path


def hardware_file(tmp_path, ports: dict[str, str], serials: dict[str, str]):
    document = yaml.safe_load(config_path("anubis.yaml").read_text())
    hardware = document["hardware"]
    hardware["calibration_dir"] = str(tmp_path / "calibration")
    for role, port in ports.items():
        hardware["arms"][role]["port"] = port
    for name, serial in serials.items():
        hardware["cameras"][name]["serial"] = serial
    path = tmp_path / "hardware.yaml"
    path.write_text(yaml.safe_dump({"hardware": hardware}))
    return path


def real_graph(path):
    return anubis_policy(sim=False, camera_node={"hardware_config": str(path)},
                         arm_driver_node={"hardware_config": str(path)})


def test_every_missing_device_is_named_at_once(tmp_path):
    path = hardware_file(tmp_path, {"follower_left": str(tmp_path / "no_left"),
                                    "follower_right": str(tmp_path / "no_right")},
                         {"ego": "123456789012", "wrist_left": ""})
    problems = missing_hardware(real_graph(path), connected_cameras=lambda: ["987654321098"])
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert f"{tmp_path / 'no_left'} not found" in text and f"{tmp_path / 'no_right'} not found" in text
    assert "camera ego: RealSense 123456789012 not connected (connected: 987654321098)" in text
    assert "camera wrist_left: no serial set" in text and "camera wrist_right: no serial set" in text


def test_a_complete_robot_passes_and_a_sim_graph_is_never_checked(tmp_path):
    masters, ports = [], {}
    for role in ("follower_left", "follower_right"):
        master, slave = os.openpty()
        tty.setraw(slave)
        masters += [master, slave]
        ports[role] = os.ttyname(slave)
    try:
        path = hardware_file(tmp_path, ports, {"ego": "111", "wrist_left": "222", "wrist_right": "333"})
        assert missing_hardware(real_graph(path), connected_cameras=lambda: ["111", "222", "333"]) == []
    finally:
        for fd in masters:
            os.close(fd)
    require_hardware(sim_robot())           # nothing to check, and no device asked for


def test_runners_and_cli_start_nothing_without_the_hardware(tmp_path, capsys):
    from twinvla_ros.cli.main import main

    path = hardware_file(tmp_path, {"follower_left": str(tmp_path / "none"), "follower_right": str(tmp_path / "none")},
                         {})
    specs = real_graph(path)
    in_process = GraphRunner(specs)
    with pytest.raises(HardwareMissing, match="nothing was started") as error:
        in_process.start()
    assert "left arm (follower_left)" in str(error.value) and "right arm (follower_right)" in str(error.value)
    assert not in_process.nodes and not in_process.context.ok()
    processes = ProcessGraphRunner(specs)
    with pytest.raises(HardwareMissing):
        processes.start()
    assert not processes.processes

    code = main(["launch", "anubis_policy", "--no-sim", "--param", f"arm_driver_node.hardware_config={path}",
                 "--param", f"camera_node.hardware_config={path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not started" in err and "camera ego: no serial set" in err and str(tmp_path / "none") in err


def test_cameras_lists_no_device_here(capsys):
    from twinvla_ros.cli.main import main

    assert main(["cameras"]) == 0
    assert "no RealSense device connected" in capsys.readouterr().out


def test_the_teleop_graph_also_needs_its_leader_arms(tmp_path):
    from twinvla_ros.bringup.graph import teleop_record

    masters, ports = [], {}
    for role in ("follower_left", "follower_right"):
        master, slave = os.openpty()
        masters += [master, slave]
        ports[role] = os.ttyname(slave)
    ports.update(leader_left=str(tmp_path / "no_leader_left"), leader_right=str(tmp_path / "no_leader_right"))
    try:
        path = hardware_file(tmp_path, ports, {"ego": "111", "wrist_left": "222", "wrist_right": "333"})
        specs = teleop_record(sim=False, task="fold the towel", **{
            node: {"hardware_config": str(path)} for node in ("camera_node", "arm_driver_node", "teleop_node")})
        problems = missing_hardware(specs, connected_cameras=lambda: ["111", "222", "333"])
    finally:
        for fd in masters:
            os.close(fd)
    assert len(problems) == 2, problems
    assert all("leader_" in p and "not found" in p for p in problems), problems
    assert missing_hardware(teleop_record(sim=True, task="lift_box")) == []
