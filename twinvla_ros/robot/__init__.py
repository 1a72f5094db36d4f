"""The robot as numbers: its description (config/anubis.yaml, the URDF), per-arm kinematics
(pinocchio), rotation conventions, the three cameras, and the 20-D bimanual vector that every
state and action inside the package uses. The bottom layer: imports nothing else of ours."""
