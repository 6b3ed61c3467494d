"""The package builds both ways: `pip install .` (done by `make test`) and colcon, with
messages importable next to the package's own Python modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)
PURELIB = Path(sysconfig.get_paths()["purelib"])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", **extra)
    return env


def installed_copy() -> Path:
    path = PURELIB / "panoptic_ros"
    assert (path / "msg").is_dir(), "panoptic_ros is not installed here: run `make dev`"
    return path


def test_pip_install_gives_messages_and_modules(tmp_path):
    pkg = installed_copy()
    code = ("import panoptic_ros, panoptic_ros.msg as m, panoptic_ros.categories as c;"
            "print(m.__file__); print(c.__file__); print(m.PanopticSegmentation.__name__)")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    msg_file, cat_file, name = p.stdout.split()
    assert Path(msg_file).is_relative_to(pkg) and Path(cat_file).is_relative_to(pkg)
    assert name == "PanopticSegmentation"
    # What ros2 run / launch look for in the prefix.
    assert os.access(PREFIX / "lib" / "panoptic_ros" / "panoptic_node", os.X_OK)
    assert (PREFIX / "share" / "panoptic_ros" / "package.xml").is_file()
    assert (PREFIX / "share" / "ament_index" / "resource_index" / "packages" /
            "panoptic_ros").is_file()
    assert (pkg / "tables" / "coco_panoptic.json").is_file()


def test_console_script_runs(tmp_path):
    exe = PREFIX / "bin" / "panoptic-ros"
    assert exe.exists(), "console script not installed: run `make dev`"
    p = subprocess.run([str(exe), "--help"], cwd=tmp_path, env=clean_env(), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "eval" in p.stdout


def source_files() -> list[str]:
    if (REPO / ".git").exists() and shutil.which("git"):
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
        return [f for f in out.splitlines() if (REPO / f).is_file()]
    skip = {".venv", "build", "install", "log", ".git", "__pycache__"}
    return [str(p.relative_to(REPO)) for p in REPO.rglob("*")
            if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)]


@pytest.mark.slow
def test_colcon_build_against_pip_ros(tmp_path):
    colcon = PREFIX / "bin" / "colcon"
    assert colcon.exists(), "colcon is not installed (it is in the test extra): run `make dev`"
    src = tmp_path / "ws" / "src" / "panoptic_ros"
    for rel in source_files():
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dst)
    env = clean_env(PATH=f"{PREFIX / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    p = subprocess.run([str(colcon), "build", "--event-handlers", "console_cohesion+"],
                       cwd=tmp_path / "ws", env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "ROS 2 from pip wheels" in p.stdout  # the guarded wheel fixes were used here
    install = tmp_path / "ws" / "install" / "panoptic_ros"
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"
    code = ("import panoptic_ros.msg as m, panoptic_ros.result as r;"
            "x = m.CategoryArray(categories=[m.Category(id=3, color=[1, 2, 3])]);"
            "print(m.__file__); print(r.__file__);"
            "print(*x.categories[0].color.tolist(), sep=',')")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                       env=clean_env(PYTHONPATH=str(site)), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    msg_file, result_file, color = p.stdout.split()
    assert Path(msg_file).is_relative_to(site) and Path(result_file).is_relative_to(site)
    assert color == "1,2,3"
    assert os.access(install / "lib" / "panoptic_ros" / "panoptic_node", os.X_OK)
    assert (install / "share" / "panoptic_ros" / "config").is_dir()
