"""What ships: the product's wheel and image hold the product and nothing of the test bed,
and each command offers only its own subcommands."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def subcommands(module: str) -> list[str]:
    """The subcommands a command's --help offers (argparse's "{a,b}" choice list)."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    found = re.search(r"^\s+\{([a-z,-]+)\}$", done.stdout, re.MULTILINE)
    assert found, done.stdout
    return found.group(1).split(",")


def test_the_product_command_offers_only_balance_and_operator() -> None:
    assert subcommands("i2p_multihome.cli") == ["balance", "operator"]


def test_the_test_bed_command_offers_the_testnet_the_control_plane_and_the_demo() -> None:
    assert subcommands("i2p_multihome_dev") == ["testnet", "cluster", "demo"]


def build_wheel(source: Path, out: Path) -> tuple[set[str], str]:
    """`pip wheel --no-deps` of `source` (the build backend comes from PyPI, in isolation):
    the files in the wheel, and its entry points."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--disable-pip-version-check", "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    return {n for n in names if ".dist-info/" not in n}, text


def test_the_product_wheel_holds_no_test_bed(tmp_path: Path) -> None:
    """Built from exactly what images/operator/Dockerfile copies."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "operator", source / "operator", ignore=shutil.ignore_patterns("__pycache__")
    )
    files, entry_points = build_wheel(source, tmp_path / "wheel")
    assert {"i2p_multihome/cli.py", "i2p_multihome/k8s/main.py", "i2p_multihome/py.typed"} <= files
    assert all(name.startswith("i2p_multihome/") for name in files), sorted(files)
    assert not [name for name in files if "harness" in name or "testnet" in name]
    assert entry_points.split() == [
        "[console_scripts]",
        "i2p-multihome",
        "=",
        "i2p_multihome.cli:main",
    ]


def test_the_test_bed_builds_as_its_own_distribution(tmp_path: Path) -> None:
    source = tmp_path / "testbed"
    shutil.copytree(ROOT / "testbed", source, ignore=shutil.ignore_patterns("__pycache__"))
    files, entry_points = build_wheel(source, tmp_path / "wheel")
    assert {
        "i2p_multihome_dev/cli.py",
        "i2p_multihome_dev/__main__.py",
        "i2p_multihome_dev/testnet/console.py",
        "i2p_multihome_dev/py.typed",
    } <= files
    assert all(name.startswith("i2p_multihome_dev/") for name in files), sorted(files)
    assert entry_points.split() == [
        "[console_scripts]", "i2p-multihome-dev", "=", "i2p_multihome_dev.cli:main",
    ]  # fmt: skip


def test_the_operator_image_copies_the_product_only() -> None:
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text()
    copied = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert [source for sources in copied for source in sources] == [
        "images/operator/constraints.txt",
        "pyproject.toml",
        "README.md",
        "operator",
    ]
    assert not list((ROOT / "operator").rglob("*harness*"))
