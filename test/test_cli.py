"""face3d-estimate on the bundled photo: JSON lines, annotated image, OBJ meshes, camera YAML, bad input."""
import json
from pathlib import Path

import numpy as np

from face3d_ros.core.cli import main
from face3d_ros.core.synthetic import SAMPLE_IMAGE

KEYS = {"bbox", "score", "landmarks_2d", "landmarks_68", "R_cam_face", "t_cam_face", "quaternion_xyzw",
        "yaw_pitch_roll_deg"}


def test_image_to_json_annotation_and_obj(tmp_path: Path):
    out = tmp_path / "faces.jsonl"
    assert main([str(SAMPLE_IMAGE), "--json", str(out), "--annotate", str(tmp_path / "ann"),
                 "--obj", str(tmp_path / "obj")]) == 0
    (line,) = out.read_text().splitlines()
    record = json.loads(line)
    assert record["image"] == str(SAMPLE_IMAGE)
    (face,) = record["faces"]
    assert KEYS <= set(face)
    assert len(face["landmarks_2d"]) == 478 and len(face["landmarks_68"]) == 68
    R = np.array(face["R_cam_face"])
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert 0.4 < face["t_cam_face"][2] < 2.0
    assert abs(np.linalg.norm(face["quaternion_xyzw"]) - 1) < 1e-5
    assert (tmp_path / "ann" / "astronaut_annotated.jpg").stat().st_size > 10_000
    mesh = (tmp_path / "obj" / "astronaut_face0.obj").read_text().splitlines()
    assert sum(l.startswith("v ") for l in mesh) == 478 and sum(l.startswith("f ") for l in mesh) == 898


def test_camera_yaml_is_used(tmp_path: Path):
    """A longer focal length in the YAML puts the same face proportionally further away."""
    def depth(fx: float) -> float:
        yaml_path = tmp_path / f"cam{fx}.yaml"
        yaml_path.write_text(f"image_width: 512\nimage_height: 512\ncamera_matrix: {{rows: 3, cols: 3, data: "
                             f"[{fx}, 0, 256, 0, {fx}, 256, 0, 0, 1]}}\ndistortion_model: plumb_bob\n"
                             "distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n")
        out = tmp_path / f"{fx}.jsonl"
        assert main([str(SAMPLE_IMAGE), "--camera-info", str(yaml_path), "--json", str(out)]) == 0
        return json.loads(out.read_text())["faces"][0]["t_cam_face"][2]
    assert abs(depth(1000.0) / depth(500.0) - 2.0) < 0.05


def test_unreadable_input_fails_with_a_message(tmp_path: Path, capsys):
    assert main([str(tmp_path / "missing.png")]) != 0
    assert "face3d-estimate:" in capsys.readouterr().err
