"""The i2pd image's configuration, run for real: Debian's i2pd (the package the image installs)
with images/i2pd's i2pd.conf and the image's command-line options, as UID 65532, in a network
namespace of its own that has nothing but loopback (so it reaches nobody). I2CP must answer
on 0.0.0.0:7654 and the console listen on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from i2p_multihome_dev.polling import NotYet, wait_until
from i2p_multihome_dev.testnet import check_host

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "images" / "i2pd"
UID = 65532
SET_DATE = 33

# In a program run in the namespace: open I2CP, send GetDate, print the reply's type.
_PROBE = """
import json, socket, struct, sys
host = sys.argv[1]
with socket.create_connection((host, 7654), timeout=5) as s:
    s.sendall(b"\\x2a")
    body = bytes([6]) + b"0.9.62" + b"\\x00\\x00"
    s.sendall(struct.pack(">IB", len(body), 32) + body)
    header = b""
    while len(header) < 5:
        chunk = s.recv(5 - len(header))
        if not chunk:
            break
        header += chunk
    length, kind = struct.unpack(">IB", header)
print(json.dumps({"type": kind, "length": length}))
"""


def entrypoint_options() -> list[str]:
    """The i2pd options of the image's ENTRYPOINT, other than the paths we replace."""
    text = (IMAGE / "Dockerfile").read_text()
    match = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert match, "no exec-form ENTRYPOINT"
    argv: list[str] = json.loads(match.group(1))
    assert argv[0] == "/usr/bin/i2pd"
    return argv[1:]


@pytest.fixture
def isolated_namespace(testnet_host: None) -> Iterator[str]:
    name = f"i2pmh-img-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


@pytest.fixture
def world_traversable_dir() -> Iterator[Path]:
    """pytest's tmp_path lies below a 0700 directory that UID 65532 cannot enter."""
    with tempfile.TemporaryDirectory(prefix="i2pmh-img-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


def test_i2pd_with_the_image_config_serves_i2cp_as_uid_65532(
    isolated_namespace: str, world_traversable_dir: Path
) -> None:
    tmp_path = world_traversable_dir
    i2pd = str(check_host())  # on PATH, as the testnet finds it
    datadir, tunnels = tmp_path / "data", tmp_path / "tunnels.d"
    datadir.mkdir()
    tunnels.mkdir()
    os.chown(datadir, UID, UID)
    options = {o.split("=", 1)[0]: o for o in entrypoint_options()}
    assert options.keys() >= {"--datadir", "--conf", "--tunconf", "--tunnelsdir", "--certsdir"}
    options.update(
        {
            "--datadir": f"--datadir={datadir}",
            "--conf": f"--conf={IMAGE / 'i2pd.conf'}",
            "--tunconf": f"--tunconf={IMAGE / 'tunnels.conf'}",
            "--tunnelsdir": f"--tunnelsdir={tunnels}",
            # No reseeding: nothing outside this namespace may be asked for routers.
            "--reseed.threshold": "--reseed.threshold=0",
        }
    )
    log = tmp_path / "i2pd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "ip", "netns", "exec", isolated_namespace,
                "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
                i2pd, *options.values(),
            ],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def answered() -> dict[str, int] | NotYet:
            assert process.poll() is None, log.read_text()
            probe = subprocess.run(
                ["ip", "netns", "exec", isolated_namespace, sys.executable, "-c", _PROBE,
                 "127.0.0.1"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if probe.returncode != 0:
                return NotYet(probe.stderr.strip().splitlines()[-1:])
            reply: dict[str, int] = json.loads(probe.stdout)
            return reply

        reply = wait_until(
            "i2pd's I2CP to answer GetDate",
            30,
            answered,
            interval=0.5,
            explain=lambda: log.read_text()[-2000:],
        )
        assert reply["type"] == SET_DATE

        listening = subprocess.run(
            ["ip", "netns", "exec", isolated_namespace, "ss", "-Hltn"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        addresses = {line.split()[3] for line in listening.splitlines()}
        assert "0.0.0.0:7654" in addresses
        assert "127.0.0.1:7070" in addresses
        assert not {a for a in addresses if a.endswith((":4444", ":4447", ":7656"))}

        owners = {p.stat().st_uid for p in datadir.rglob("*")}
        assert owners == {UID}
        assert (datadir / "router.keys").is_file()
        assert (datadir / "router.keys").stat().st_uid == UID
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
