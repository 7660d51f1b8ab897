"""The README stays true: every parameter documented, the test command the one CI runs."""
from pathlib import Path

from face3d_ros.core.config import PipelineConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_parameter_is_in_the_readme_with_its_default():
    from face3d_ros.ros.params import all_params
    for spec in all_params().values():
        row = next((line for line in README.splitlines() if line.startswith(f"| `{spec.name}` |")), None)
        assert row is not None, f"{spec.name} missing from README's parameter table"
        default = str(spec.default).lower() if isinstance(spec.default, bool) else (
            repr(spec.default) if isinstance(spec.default, str) else str(spec.default))
        assert f"`{default}`" in row, f"{spec.name}: README default differs from {default}"


def test_pipeline_config_keys_are_all_parameters():
    from face3d_ros.ros.params import all_params
    assert set(PipelineConfig().flat()) <= set(all_params())


def test_readme_test_command_is_what_ci_runs():
    command = ".venv/bin/python -m pytest -q test"
    assert command in README
    assert command in (ROOT / ".ci" / "run").read_text()


def test_no_placeholders_left():
    for marker in ("PARAM_TABLE", "AFLW_TABLE", "STABILITY_TABLE", "SPEED_TABLE", "ROBUSTNESS_TABLE", "TBD"):
        assert marker not in README, marker
