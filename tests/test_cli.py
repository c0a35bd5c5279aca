from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import jwt

from gateway.auth import load_or_create_dev_secret


def test_token_command_mints_a_dev_token_for_the_embedded_default(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "token",
            "--user",
            "alice",
            "--channels",
            "a,b-*",
            "--data-dir",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    secret = load_or_create_dev_secret(str(tmp_path))
    claims = jwt.decode(out, secret, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["channels"] == ["a", "b-*"]


def test_bad_setting_is_reported_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--data-dir", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "GATEWAY_WS_PORT": "http"},
    )
    assert proc.returncode == 2
    assert "GATEWAY_WS_PORT" in proc.stderr


def test_port_in_use_is_reported_clearly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--data-dir",
                str(tmp_path),
                "--ws-port",
                str(port),
                "--http-port",
                "0",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "GATEWAY_LOG_LEVEL": "ERROR"},
        )
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr and "in use" in proc.stderr
    assert "Traceback" not in proc.stderr
