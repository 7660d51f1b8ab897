"""face3d-node / `ros2 run face3d_ros face3d_node`: runs the face3d lifecycle node.

    face3d-node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info \\
        --params-file config/face3d.yaml

With autostart:=true (the default) the node configures and activates itself and the process exits with
status 1 if that fails (the reason is logged); with autostart:=false it waits in the unconfigured state for
the lifecycle transitions (`ros2 lifecycle set /face3d_node configure`, then `activate`).
Ctrl-C (SIGINT) and SIGTERM end it cleanly with status 0.

The node's callbacks never let an exception out; should one escape anyway (a bug), it is logged with its
traceback and the node keeps running. Only MAX_ESCAPES of them within ESCAPE_WINDOW_S seconds end the process
(status 1), so that a supervisor (launch `respawn`, systemd) can restart a node that is failing for good.
"""
from __future__ import annotations

import sys
import time
import traceback
from collections import deque

try:
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
except ModuleNotFoundError as err:   # a core-only `pip install .` installs the face3d-node script too
    MISSING_ROS = err
else:
    MISSING_ROS = None


MAX_ESCAPES, ESCAPE_WINDOW_S = 20, 10.0


def spin(executor, node) -> int:
    """Spin until shutdown (0); a callback's exception is logged and spinning goes on, unless they come too
    fast (1)."""
    escapes: deque[float] = deque(maxlen=MAX_ESCAPES)
    while True:
        try:
            executor.spin()
            return 0
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as err:
            if not node.context.ok():
                # SIGTERM/SIGINT shut the context down while the executor was building its wait set: rclpy
                # then raises an RCLError ("context is not valid") instead of ExternalShutdownException
                return 0
            escapes.append(time.monotonic())
            node.get_logger().error(f"a callback raised {type(err).__name__}: {err} (the node goes on):\n"
                                    + "".join(traceback.format_exception(err)).rstrip())
            if len(escapes) == MAX_ESCAPES and escapes[-1] - escapes[0] < ESCAPE_WINDOW_S:
                node.get_logger().fatal(f"{MAX_ESCAPES} callback failures within {ESCAPE_WINDOW_S:g} s: exiting")
                return 1


def main(args: list[str] | None = None) -> int:
    missing = MISSING_ROS
    if missing is None:
        try:
            from .node import Face3dNode
        except ModuleNotFoundError as err:   # e.g. a core-only install in a shell with ROS sourced
            missing = err
    if missing is not None:
        print(f"face3d-node: the node needs ROS 2 (rclpy and the built face3d_ros messages; see README "
              f"\"Install\"): {missing}", file=sys.stderr)
        return 1
    rclpy.init(args=args)
    node = None
    try:
        node = Face3dNode()
        if node.get_parameter("autostart").value:
            for name, transition in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"autostart: {name} failed (see the error above); exiting")
                    return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        return spin(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass   # Ctrl-C or SIGTERM: a normal end
    finally:
        if node is not None:
            try:
                node.destroy_node()
            except Exception:
                pass
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
