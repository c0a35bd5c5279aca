from __future__ import annotations

import io
import logging

import msgspec

from gateway.logs import JsonFormatter


def test_log_lines_are_json_with_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("gateway.test.logs")
    log.addHandler(handler)
    log.propagate = False
    log.warning("slow consumer shed", extra={"peer": "1.2.3.4:5", "obj": object()})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("crashed")
    lines = [msgspec.json.decode(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["msg"] == "slow consumer shed" and lines[0]["peer"] == "1.2.3.4:5"
    assert lines[0]["level"] == "warning" and lines[0]["ts"].endswith("Z")
    assert "ValueError: boom" in lines[1]["exc"]
