"""ROS 2 adapter of face3d_ros: conversions, node, tools (the only part that imports rclpy)."""

# Fast DDS reads its XML profile from FASTDDS_DEFAULT_PROFILES_FILE since 3.x (Kilted) and from
# FASTRTPS_DEFAULT_PROFILES_FILE in 2.x (Jazzy): set both (measured: a Jazzy publisher with only the FASTDDS_
# name delivered 33 of 300 full-size frames, with the FASTRTPS_ name 300 of 300).
PROFILE_ENV_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def profile_env(path) -> dict:
    """The environment that makes a process load the Fast DDS profile at `path`, whatever its Fast DDS."""
    return {name: str(path) for name in PROFILE_ENV_VARS}
