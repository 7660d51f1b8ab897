"""`pip install .` on a machine without ROS: the vision core and face3d-estimate, no rclpy anywhere."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_plain_pip_install_gives_the_ros_free_core(tmp_path: Path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # the pip of the test's own interpreter installs into the new venv (an isolated build: no ament there)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(REPO)],
                   check=True, capture_output=True, text=True, timeout=600)
    out = tmp_path / "faces.jsonl"
    estimate = subprocess.run([str(venv / "bin" / "face3d-estimate"), str(REPO / "face3d_ros" / "data" / "astronaut.png"),
                               "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert estimate.returncode == 0, estimate.stderr
    assert len(json.loads(out.read_text())["faces"]) == 1
    no_ros = subprocess.run([str(python), "-c", "import rclpy"], capture_output=True, text=True, cwd=tmp_path)
    assert "No module named 'rclpy'" in no_ros.stderr
    no_msgs = subprocess.run([str(python), "-c", "import face3d_ros.msg"], capture_output=True, text=True,
                             cwd=tmp_path)
    assert no_msgs.returncode != 0   # messages are built only with FACE3D_WITH_ROS=1
