from __future__ import annotations

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
