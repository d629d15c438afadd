"""scripts/services.sh: idempotent, one line per service, every port answers afterwards."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "services.sh"
PORTS = {
    "postgresql": 5432,
    "redis": 6379,
    "rabbitmq": 5672,
    "nats": 4222,
    "kafka (tansu)": 9092,
    "s3 (moto)": 5000,
}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def test_services_script_is_executable_and_idempotent() -> None:
    assert SCRIPT.stat().st_mode & 0o111, "scripts/test.sh runs services.sh only when executable"
    for _ in range(2):  # the second run finds everything up and changes nothing
        done = subprocess.run(
            ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == list(PORTS)
    assert all("already up" in line for line in lines)
    for name, port in PORTS.items():
        assert _answers(port), f"{name} does not answer on {port}"


def test_services_script_failure_names_the_service() -> None:
    # wait_port with nothing listening: a one-line reason naming the service, non-zero exit.
    body = SCRIPT.read_text()
    fn = body[body.index("fail() {") : body.index("apt_install()")]
    done = subprocess.run(
        ["bash", "-c", f"WAIT_S=1\n{fn}\nwait_port ghost 1 /nowhere.log"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "services: ghost did not answer on 127.0.0.1:1 within 1s (logs: /nowhere.log)"
    )
