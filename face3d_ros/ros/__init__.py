"""ROS 2 adapter of face3d_ros: conversions, node, tools (the only part that imports rclpy)."""

import importlib.metadata
import os

# Fast DDS reads its XML profile from FASTDDS_DEFAULT_PROFILES_FILE since 3.x (Kilted) and from
# FASTRTPS_DEFAULT_PROFILES_FILE in 2.x (Jazzy): set both (measured: a Jazzy publisher with only the FASTDDS_
# name delivered 33 of 300 full-size frames, with the FASTRTPS_ name 300 of 300).
PROFILE_ENV_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def profile_env(path) -> dict:
    """The environment that makes a process of this ROS install load the Fast DDS profile at `path`: the one
    variable its Fast DDS reads (3.x warns that the 2.x name is deprecated), both when it cannot tell."""
    distro = os.environ.get("ROS_DISTRO", "") or _distro_of_rclpy_wheel()
    if distro in ("humble", "iron", "jazzy"):
        names = PROFILE_ENV_VARS[1:]
    elif distro:
        names = PROFILE_ENV_VARS[:1]
    else:
        names = PROFILE_ENV_VARS
    return {name: str(path) for name in names}


def _distro_of_rclpy_wheel() -> str:
    """The pip route has no ROS_DISTRO: rclpy 9.x is Kilted (Fast DDS 3), 7.x Jazzy (Fast DDS 2)."""
    try:
        major = int(importlib.metadata.version("ros-rclpy").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ""
    return "kilted" if major >= 9 else "jazzy"
