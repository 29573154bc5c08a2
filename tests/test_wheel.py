"""The wheel installs like a library: it carries the zoo and the example pairs, and from another folder the demo's
files, `corrmark zoo --check` and load_zoo_matcher work with no source checkout in sight."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "No module named pip" in result.stderr:
        pytest.skip("pip is not available")
    assert result.returncode == 0, result.stderr[-2000:]
    return next(out.glob("corrmark-*.whl"))


def test_wheel_carries_zoo_examples_license_and_typing(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "corrmark/_bundled/zoo/zoo.yaml" in names and "corrmark/_bundled/examples/pairs.json" in names
    assert "corrmark/py.typed" in names
    assert any(name.endswith("licenses/LICENSE") or name.endswith("/LICENSE") for name in names)
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "corrmark = corrmark.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert not any("matplotlib" in line or "torchvision" in line for line in requirements)  # not imported
    assert any("onnxruntime" in line for line in requirements)  # SFNet's saliency masks need it


def test_installed_wheel_runs_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {key: value for key, value in os.environ.items() if key not in ("CORRMARK_ZOO", "CORRMARK_EXAMPLES")}
    env["PYTHONPATH"] = str(site)  # the installed copy only: no src/ of this checkout
    script = ("import json, corrmark, corrmark.zoo as z, corrmark.demo as d;"
              "print(json.dumps([corrmark.__file__, str(z.zoo_dir()), str(d.examples_dir()),"
              " [e.name for e in z.list_zoo() if e.available]]))")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    module, zoo, examples, available = json.loads(result.stdout)
    assert module.startswith(str(site)) and zoo.startswith(str(site)) and examples.startswith(str(site))
    assert "sfnet_cub" in available
    version = subprocess.run([sys.executable, "-m", "corrmark", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert version.returncode == 0 and version.stdout.startswith("corrmark ")
