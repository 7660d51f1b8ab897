"""Where the shipped models live, and checking them against their manifest.

Search order: an explicit folder (backend.models_dir) or else $FACE3D_MODELS_DIR, either used alone (a folder
named on purpose is never silently replaced by another); otherwise the installed share folder (ament index,
then <sys.prefix>/share/face3d_ros/models for pip installs), then the source tree's models/.
"""
from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

MARKER = "canonical_face_model.obj"
MANIFEST = "MANIFEST.sha256"


def _candidates(override: str) -> list[Path]:
    named = override or os.environ.get("FACE3D_MODELS_DIR", "")
    if named:   # named on purpose: used alone, never silently replaced by the installed models
        return [Path(named).expanduser()]
    places = []
    try:  # a sourced ROS install (colcon)
        from ament_index_python.packages import get_package_share_directory
        places.append(Path(get_package_share_directory("face3d_ros")) / "models")
    except Exception:  # not installed that way, or no ament_index_python: try the next place
        pass
    places.append(Path(sys.prefix) / "share" / "face3d_ros" / "models")
    places.append(Path(__file__).resolve().parents[2] / "models")
    return places


@lru_cache(maxsize=8)
def models_dir(override: str = "") -> Path:
    """The first folder holding the models; FileNotFoundError lists the places tried."""
    tried = _candidates(override)
    for place in tried:
        if (place / MARKER).is_file():
            return place
    raise FileNotFoundError("face3d_ros models not found; tried: " + ", ".join(str(p) for p in tried))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """{file name: sha256} from MANIFEST.sha256 (sha256sum format)."""
    entries = {}
    for line in (folder / MANIFEST).read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name.lstrip("*")] = digest
    return entries


class ModelFilesError(ValueError):
    """Model files missing or corrupt; the message lists every problem and the folder."""


def check_model_files(folder: Path, names) -> list[str]:
    """The problems of the model files `names` in `folder` (missing, empty, not listed in the manifest beside
    them or not matching it, or no manifest at all), one line each; empty when all are fine. Every file is
    checked, not just the first bad one."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return [f"{MANIFEST} is missing: the files cannot be verified (a models folder is written with its "
                "manifest by models/build_models.py)"]
    try:
        manifest = read_manifest(folder)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return [f"{MANIFEST} is unreadable ({err})"]
    problems = []
    for name in names:
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size == 0:
            problems.append(f"{name} is empty (0 bytes)")
            continue
        expected = manifest.get(name)
        if expected is None:
            problems.append(f"{name} is not listed in {MANIFEST}")
        elif sha256_of(path) != expected:
            problems.append(f"{name} ({size} bytes) does not match its sha256 in {MANIFEST} (corrupt, truncated "
                            "or replaced)")
    return problems


def verify_model_files(folder: Path, names) -> None:
    """Raise ModelFilesError listing every problem of the model files `names` in `folder`."""
    problems = check_model_files(folder, names)
    if problems:
        raise ModelFilesError(f"model files in {folder} are unusable: " + "; ".join(problems)
                              + " (reinstall the package or point backend.models_dir at a complete folder)")


def share_dir(override: str = "") -> Path:
    """The package's share folder (models/, config/, launch/): installed, or the source tree."""
    return models_dir(override).parent
