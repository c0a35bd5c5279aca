"""Autobahn WebSocket conformance of the data plane (kosoku drives the Autobahn cases).

The harness is the real connection actor (wsproto reader, message assembly and limits,
the non-blocking writer with frames built by ``build_frame``) with one change: it echoes
every message instead of speaking the gateway protocol, which is what the Autobahn cases
expect. Compression (sections 12 and 13) is excluded: the gateway never negotiates it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import trio

from gateway.actors.connection import Connection
from gateway.app import open_gateway
from gateway.config import Limits
from gateway.protocol import build_frame
from tests.conftest import make_settings

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
ACCEPTED_CLOSE = {"OK", "INFORMATIONAL"}


class EchoConnection(Connection):
    __slots__ = ()

    def _greet(self) -> None:
        pass  # Autobahn expects no unsolicited frame

    def ping(self, now: float) -> None:
        self.last_ping = now  # no heartbeat either: the first may come at any time now

    async def _on_message(self, data: bytes | str) -> None:
        if isinstance(data, str):
            self.send_frame(build_frame(data.encode(), False))
        else:
            self.send_frame(build_frame(data, True))


def _kosoku() -> str:
    exe = shutil.which("kosoku", path=str(Path(sys.executable).parent))
    assert exe, "kosoku is missing: install the test extras (./scripts/test does)"
    return exe


async def test_autobahn_cases_pass(tmp_path: Path) -> None:
    limits = Limits(
        max_message_bytes=20 * 2**20,  # section 9 sends up to 16 MiB
        max_fragments=2**20,
        rate_per_second=1e6,
        rate_burst=10**6,
        outbox_max_bytes=64 * 2**20,
    )
    settings = make_settings(tmp_path, limits=limits)
    reports = tmp_path / "reports"
    with trio.fail_after(600):
        async with open_gateway(settings) as gw:
            gw.node.connection_class = EchoConnection
            proc = await trio.run_process(
                [_kosoku(), gw.ws_url, "-x", "12.*", "-x", "13.*", "-o", str(reports)],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    index = json.loads((reports / "index.json").read_text())
    (cases,) = index.values()
    assert len(cases) == 301, proc.stdout.decode()[-2000:]
    bad = {
        case: (r["behavior"], r["behaviorClose"])
        for case, r in cases.items()
        if r["behavior"] not in ACCEPTED or r["behaviorClose"] not in ACCEPTED_CLOSE
    }
    assert not bad, bad
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
