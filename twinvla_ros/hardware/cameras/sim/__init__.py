"""Camera backend for the MuJoCo sim: a camera of a SimWorld."""
from twinvla_ros.hardware.cameras.sim.sim_camera import SimCamera

__all__ = ["SimCamera"]
