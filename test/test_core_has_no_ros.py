"""The vision core stays usable without ROS: no module of face3d_ros.core imports a ROS package."""
import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "face3d_ros" / "core"
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "sensor_msgs", "geometry_msgs", "std_msgs", "visualization_msgs",
                "tf2_ros", "tf2_msgs", "cv_bridge", "builtin_interfaces", "diagnostic_msgs", "lifecycle_msgs",
                "launch", "launch_ros"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level >= 2:   # from ..ros import x
            roots.add("face3d_ros." + (node.module or ""))
    return roots


def test_no_core_module_imports_ros():
    for path in sorted(CORE.glob("*.py")):
        roots = imported_roots(path)
        assert not roots & ROS_PACKAGES, f"{path.name} imports {roots & ROS_PACKAGES}"
        assert not any(r.startswith("face3d_ros.ros") for r in roots), f"{path.name} imports the ROS layer"


def test_core_runs_with_ros_unimportable():
    """Block every ROS package, then run the pipeline on the bundled photo in a fresh interpreter."""
    code = f"""
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {sorted(ROS_PACKAGES)!r}:
            raise ImportError('ROS blocked: ' + name)
sys.meta_path.insert(0, Blocker())
from face3d_ros.core import FacePipeline, PipelineConfig
from face3d_ros.core.synthetic import load_sample
faces = FacePipeline(PipelineConfig().updated({{"tracking.enabled": False}})).process(load_sample())
print(len(faces))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=CORE.parents[1], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1"
