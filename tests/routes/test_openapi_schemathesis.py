"""Schemathesis against the running REST app: every operation of the served OpenAPI
document, with generated parameters and bodies, answers without a 5xx, with a documented
status code and content type, and with a body that conforms to the documented schema.

Each operation runs with valid inputs (positive) and with inputs that break the document
(negative: wrong types, out-of-limit values, unknown fields ...), each both with generated
path parameters (mostly unknown ids: the 4xx paths) and with the ids of a seeded
workspace, channel and user (the 2xx paths). Bounded: a few examples per variant, no
shrinking, no example database; about 20 s on two cores.
"""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from schemathesis.core.result import Ok

from gateway.app import Gateway
from gateway.protocol.frames import Publish
from tests.routes.domain_helpers import auth, http_client, make_channel, make_user, make_workspace

EXAMPLES = 10
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def _fuzz(base_url: str, headers: dict[str, str], ids: dict[str, str]) -> tuple[list[str], int]:
    """Run every operation of the document the app serves; return the failures and the
    number of requests sent. Blocking (schemathesis sends with requests): run in a thread."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.yaml", timeout=10)
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.path.startswith("/v1/blobs/"):
            # Signed capability URLs (local file storage): without a valid HMAC signature
            # every generated request is 403, and a signed one cannot be generated; they
            # are covered by tests/routes/test_files.py instead.
            continue
        names = {p.name for p in operation.path_parameters}
        variants: list[tuple[str, SearchStrategy[schemathesis.Case[Any]]]] = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            variants.append((mode.value, operation.as_strategy(mode)))
            if names:
                fixed = {name: ids[name] for name in names}
                variants.append((mode.value, operation.as_strategy(mode, path_parameters=fixed)))
        if any(p.name == "workspace" for p in operation.query):
            query = {"workspace": ids["workspace"]}
            variants.append(("positive", operation.as_strategy(query=query)))
        for mode_name, strategy in variants:

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case[Any]) -> None:
                nonlocal calls
                calls += 1
                response = case.call(base_url=base_url, headers=headers, timeout=10)
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:  # negative mode: nothing of the operation can be invalid
                assert mode_name == "negative", operation.label
            except Exception as exc:  # one failure per operation variant is enough
                failures.append(f"{operation.label} ({mode_name}): {str(exc)[:2000]}")
    return failures, calls


async def _ready_file(http: httpx.AsyncClient) -> str:
    """A file of alice's, uploaded and completed: the 2xx paths of ``/v1/files/{file}``."""
    r = await http.post(
        "/v1/files",
        headers=auth("alice"),
        json={"name": "a.txt", "size": 2, "content_type": "text/plain"},
    )
    assert r.status_code == 201, r.text
    file_id: str = r.json()["id"]
    upload = r.json()["upload"]
    r = await http.put(upload["url"], content=b"hi", headers=upload["headers"])
    assert r.status_code == 204, r.text
    r = await http.post(f"/v1/files/{file_id}/complete", headers=auth("alice"))
    assert r.status_code == 200, r.text
    return file_id


async def test_the_app_conforms_to_its_openapi_document(gateway: Gateway) -> None:
    with trio.fail_after(120):
        async with http_client(gateway) as http:
            await make_user(http, "alice")
            ws = await make_workspace(http, "alice", {"bob": "member"})
            channel = await make_channel(http, ws, "alice", "general")
            file_id = await _ready_file(http)
        posted = await gateway.node.messages.publish(
            "alice", Publish(channel=channel["id"], cmid="fuzz-1", body="hello")
        )
        ids = {
            "workspace": ws,
            "channel": channel["id"],
            "user": "bob",
            "file": file_id,
            "message": posted.record.id,
        }
        failures, calls = await trio.to_thread.run_sync(
            _fuzz, gateway.http_url, auth("alice"), ids, abandon_on_cancel=True
        )
    assert calls > 100
    assert not failures, "\n\n".join(failures)
