"""face3d-estimate on the bundled photo: JSON lines, annotated image, OBJ meshes, camera YAML, bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from face3d_ros.core import cli
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


def camera_yaml(path: Path, fx: float = 500.0, size: tuple[int, int] = (512, 512)) -> Path:
    path.write_text(f"image_width: {size[0]}\nimage_height: {size[1]}\ncamera_matrix: {{rows: 3, cols: 3, data: "
                    f"[{fx}, 0, 256, 0, {fx}, 256, 0, 0, 1]}}\ndistortion_model: plumb_bob\n"
                    "distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n")
    return path


def error_line(capsys) -> str:
    """The one line the CLI wrote to stderr."""
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("face3d-estimate: ")
    return line


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """Three frames of the astronaut at 10 fps."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    image = cv2.imread(str(SAMPLE_IMAGE))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (image.shape[1], image.shape[0]))
    for _ in range(3):
        writer.write(image)
    writer.release()
    return path


def test_camera_yaml_is_used(tmp_path: Path):
    """A longer focal length in the YAML puts the same face proportionally further away."""
    def depth(fx: float) -> float:
        out = tmp_path / f"{fx}.jsonl"
        yaml_path = camera_yaml(tmp_path / f"cam{fx}.yaml", fx)
        assert main([str(SAMPLE_IMAGE), "--camera-info", str(yaml_path), "--json", str(out)]) == 0
        return json.loads(out.read_text())["faces"][0]["t_cam_face"][2]
    assert abs(depth(1000.0) / depth(500.0) - 2.0) < 0.05


def test_camera_yaml_is_read_once(clip: Path, tmp_path: Path, monkeypatch):
    calibrated = cli.load_camera_yaml(camera_yaml(tmp_path / "cam.yaml"))
    reads = []

    def counted_load(path: Path):
        reads.append(path)
        return calibrated
    monkeypatch.setattr(cli, "load_camera_yaml", counted_load)
    assert main([str(clip), "--camera-info", str(tmp_path / "cam.yaml")]) == 0
    assert len(reads) == 1


def test_missing_camera_yaml_is_one_line(tmp_path: Path, capsys):
    assert main([str(SAMPLE_IMAGE), "--camera-info", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in error_line(capsys)


def test_camera_yaml_for_another_size_skips_the_image(tmp_path: Path, capsys):
    """A calibration for 640x480 images gives garbage poses on the 512x512 photo: skipped, not used."""
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE_IMAGE, folder / "astronaut.png")
    yaml_path = camera_yaml(tmp_path / "cam.yaml", size=(640, 480))
    out = tmp_path / "faces.jsonl"
    assert main([str(folder), "--camera-info", str(yaml_path), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "skipped" in err and "640x480" in err and "512x512" in err
    assert out.read_text() == ""


@pytest.mark.parametrize("camera_args, reason", [
    (["--cx", "100"], "need --fx"),
    (["--fx", "500", "--fy", "0"], "--fy must be"),
    (["--fx", "0"], "--fx must be"),
    (["--fx", "nan"], "--fx must be"),
    (["--fx", "500", "--camera-info", "cam.yaml"], "pick one"),
])
def test_bad_intrinsics_are_rejected(camera_args, reason, capsys):
    assert main([str(SAMPLE_IMAGE), *camera_args]) == 2
    assert reason in error_line(capsys)


def test_one_bad_image_does_not_stop_the_folder(tmp_path: Path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE_IMAGE, folder / "astronaut.png")
    cv2.imwrite(str(folder / "thumbnail.png"), np.zeros((12, 12, 3), np.uint8))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "faces.jsonl"
    assert main([str(folder), "--json", str(out)]) == 0
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["image"].endswith("astronaut.png")
    err = capsys.readouterr().err.splitlines()
    assert f"face3d-estimate: cannot read image {folder / 'broken.jpg'}" in err
    assert any(l.startswith("face3d-estimate: skipped") and "12x12" in l for l in err)


def test_files_sharing_a_stem_get_their_own_outputs(tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(SAMPLE_IMAGE, folder / "a.png")
    shutil.copy(SAMPLE_IMAGE, folder / "b.png")
    cv2.imwrite(str(folder / "a.jpg"), cv2.imread(str(SAMPLE_IMAGE)))
    assert main([str(folder), "--obj", str(tmp_path / "obj"), "--annotate", str(tmp_path / "ann")]) == 0
    assert sorted(p.name for p in (tmp_path / "obj").iterdir()) == ["a_jpg_face0.obj", "a_png_face0.obj",
                                                                    "b_face0.obj"]
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["a_jpg_annotated.jpg", "a_png_annotated.jpg",
                                                                    "b_annotated.jpg"]
    # a name made unique can meet a file's own stem: still one output each
    assert cli.output_names([Path("a.jpg"), Path("a.png"), Path("a_png.jpg")]) == ["a_jpg", "a_png", "a_png_2"]


def test_video_has_faces_from_the_first_frame(clip: Path, tmp_path: Path):
    out = tmp_path / "faces.jsonl"
    assert main([str(clip), "--json", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["frame"], len(r["faces"])) for r in records] == [(0, 1), (1, 1), (2, 1)]


def test_annotated_video_keeps_the_frame_rate(clip: Path, tmp_path: Path):
    assert main([str(clip), "--annotate", str(tmp_path)]) == 0
    annotated = cv2.VideoCapture(str(tmp_path / "clip_annotated.mp4"))
    assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    annotated.release()
    assert cli.video_fps(tmp_path / "no_video.mp4") == 30.0   # a frame rate of 0: the fallback


def test_json_folder_is_created(tmp_path: Path):
    out = tmp_path / "new" / "folder" / "faces.jsonl"
    assert main([str(SAMPLE_IMAGE), "--json", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1


@pytest.mark.parametrize("name", ["missing.png", "missing.mp4", "missing_folder"])
def test_missing_input_is_one_line(name: str, tmp_path: Path, capsys):
    assert main([str(tmp_path / name)]) == 2
    assert error_line(capsys) == f"face3d-estimate: no such file or folder: {tmp_path / name}"


@pytest.mark.parametrize("missing", ["rclpy", "face3d_ros.msg"])
def test_node_without_ros_says_what_it_needs(missing):
    """A core-only `pip install .` installs face3d-node too: without rclpy, or with ROS sourced but without
    the built messages, it explains in one line, no traceback."""
    code = (f"import sys; sys.modules[{missing!r}] = None\n"   # what a Python without that module sees
            "from face3d_ros.ros.main import main; sys.exit(main())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).parents[1])   # this checkout
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("face3d-node: ") and "ROS 2" in line and "rclpy" in line
