"""A gateway on AWS (moto's server): DynamoDB stores and S3 blobs end to end, and the
startup check that refuses to run without its tables or bucket (creating nothing)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from gateway.app import InfrastructureMissing, open_file_records, open_gateway, open_stores
from gateway.aws import Aws, AwsError
from gateway.config import Settings, SettingsError
from gateway.errors import StoreUnavailable
from gateway.protocol import frames as f
from gateway.store.tables import DOMAIN, TABLES, check_bucket, create_bucket, create_tables
from tests.aws import connect
from tests.conftest import make_settings, token
from tests.rawclient import LOG_EVENTS, raw_client
from tests.routes.domain_helpers import auth, http_client, make_channel, make_user, make_workspace

T = 60  # seconds: deadline of each test body
SQLITE_FILES = (
    "messages.sqlite3",
    "domain.sqlite3",
    "message-state.sqlite3",
    "read-state.sqlite3",
    "files.sqlite3",
)


@pytest.fixture(autouse=True)
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's credential chain, from the environment only (never a metadata endpoint)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def on_aws(tmp_path: Path, moto_url: str, **kw: Any) -> Settings:
    settings = make_settings(
        tmp_path / "data",
        store="dynamodb",
        dynamodb_prefix=f"app-{uuid.uuid4().hex[:10]}",
        s3_bucket=f"files-{uuid.uuid4().hex[:12]}",
        aws_endpoint_url=moto_url,
    )
    settings = dataclasses.replace(settings, **kw)
    settings.validate()
    return settings


async def tables_under(aws: Aws, prefix: str) -> set[str]:
    names: set[str] = set()
    params: dict[str, str] = {}
    while True:
        page = await aws.dynamodb("list_tables", **params)
        names |= {n for n in page["TableNames"] if n.startswith(f"{prefix}-")}
        if "LastEvaluatedTableName" not in page:
            return names
        params = {"ExclusiveStartTableName": page["LastEvaluatedTableName"]}


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


async def test_a_gateway_on_dynamodb_and_s3_works_end_to_end(tmp_path: Path, moto_url: str) -> None:
    settings = on_aws(tmp_path, moto_url)
    prefix = settings.dynamodb_prefix
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            await create_tables(aws, prefix, TABLES)
            await create_bucket(aws, settings.s3_bucket)
        async with open_gateway(settings) as gw, http_client(gw) as http:
            await make_user(http, "alice")
            ws = await make_workspace(http, "alice")
            channel = (await make_channel(http, ws, "alice", "general"))["id"]

            # a file, uploaded straight to S3 with the presigned PUT
            r = await http.post(
                "/v1/files",
                headers=auth("alice"),
                json={"name": "hi.txt", "size": 5, "content_type": "text/plain"},
            )
            assert r.status_code == 201, r.text
            created = r.json()
            up = created["upload"]
            assert up["url"].startswith(f"{moto_url}/{settings.s3_bucket}/files/{created['id']}?")
            assert "X-Amz-Signature=" in up["url"]
            headers = {k: v for k, v in up["headers"].items() if k != "Content-Length"}
            async with httpx.AsyncClient(timeout=10) as s3:
                put = await s3.put(up["url"], content=b"hello", headers=headers)
                assert put.status_code == 200, put.text
            r = await http.post(f"/v1/files/{created['id']}/complete", headers=auth("alice"))
            assert r.status_code == 200 and r.json()["status"] == "ready", r.text
            file_id = created["id"]

            async with raw_client(gw.ws_url, token=token("alice")) as alice:
                await alice.subscribe(channel)
                await alice.send(
                    f.Publish(channel=channel, cmid="c1", body="hello aws", files=[file_id])
                )
                ack = await alice.expect(f.Ack, skip=(f.MessageEvent, *LOG_EVENTS))
                assert ack.cmid == "c1"
            page = await http.get(f"/v1/channels/{channel}/messages", headers=auth("alice"))
            assert page.status_code == 200, page.text
            last = page.json()["messages"][-1]
            assert (last["body"], last["files"]) == ("hello aws", [file_id])
            r = await http.put(
                f"/v1/channels/{channel}/read", headers=auth("alice"), json={"offset": ack.offset}
            )
            assert r.status_code == 200, r.text
            r = await http.get(f"/v1/files/{file_id}", headers=auth("alice"))
            assert r.status_code == 200, r.text
            async with httpx.AsyncClient(timeout=10) as s3:
                got = await s3.get(r.json()["download"]["url"])
            assert got.content == b"hello"

        # all of it is in DynamoDB: read back through freshly opened stores
        async with open_stores(settings) as stores, open_file_records(settings) as records:
            stored = await stores.messages.inner.read(channel, ack.offset - 1, 10)
            assert [(m.body, m.files, m.sender) for m in stored if not m.kind] == [
                ("hello aws", (file_id,), "alice")
            ]
            workspace = await stores.domain.get_workspace(ws)
            assert workspace is not None and workspace.owner == "alice"
            record = await records.get(file_id)
            assert record is not None and record.status == "ready"
            cursor = await stores.reads.get_cursor("alice", channel)
            assert cursor is not None and cursor.offset == ack.offset
    data = Path(settings.data_dir)
    assert not [name for name in SQLITE_FILES if (data / name).exists()]


async def test_missing_table_and_bucket_stop_the_start_naming_both(
    tmp_path: Path, moto_url: str
) -> None:
    settings = on_aws(tmp_path, moto_url)
    prefix = settings.dynamodb_prefix
    others = [spec for spec in TABLES if spec is not DOMAIN]
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            await create_tables(aws, prefix, others)
            before = await tables_under(aws, prefix)
            try:
                async with open_gateway(settings):
                    raise AssertionError("the gateway started without its domain table")
            except BaseException as exc:  # bare, or in a group
                errors = leaves(exc)
            assert [type(e) for e in errors] == [InfrastructureMissing], errors
            missing = errors[0]
            assert isinstance(missing, InfrastructureMissing)
            assert isinstance(missing, StoreUnavailable)  # handled like any store outage
            assert missing.problems == (
                f"{prefix}-domain: missing",
                f"bucket {settings.s3_bucket}: missing",
            )
            assert f"{prefix}-domain: missing" in str(missing)
            # nothing was created: no table, no bucket, no SQLite file instead
            assert await tables_under(aws, prefix) == before
            assert await check_bucket(aws, settings.s3_bucket) == [
                f"bucket {settings.s3_bucket}: missing"
            ]
    data = Path(settings.data_dir)
    assert not [name for name in SQLITE_FILES if (data / name).exists()]


async def test_a_different_table_is_named_too(tmp_path: Path, moto_url: str) -> None:
    """A table with the right name and the wrong key is as bad as none."""
    settings = on_aws(tmp_path, moto_url, s3_bucket="")
    prefix = settings.dynamodb_prefix
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            await create_tables(aws, prefix, [spec for spec in TABLES if spec is not DOMAIN])
            await aws.dynamodb(
                "create_table",
                TableName=f"{prefix}-domain",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        with pytest.raises(InfrastructureMissing, match=f"{prefix}-domain: key schema"):
            async with open_stores(settings):
                pass


async def test_aws_presign_is_public_and_checks_the_operation(moto_url: str) -> None:
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            url = await aws.presign(
                "s3",
                "put_object",
                expires_s=60,
                Bucket="some-bucket",
                Key="files/x",
                ContentLength=5,
                ContentType="text/plain",
            )
            assert url.startswith(f"{moto_url}/some-bucket/files/x?")
            assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url  # SigV4 in us-east-1 too
            assert "content-length" in url.lower()
            with pytest.raises(AwsError) as info:
                await aws.presign("s3", "no_such_operation", expires_s=60)
            assert info.value.aws_code == "UnknownOperation"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"GATEWAY_STORE": "postgres"}, "GATEWAY_STORE"),
        ({"GATEWAY_STORE": "dynamodb", "GATEWAY_DYNAMODB_PREFIX": "bad prefix"}, "PREFIX"),
        ({"GATEWAY_DYNAMODB_PREFIX": ""}, "GATEWAY_DYNAMODB_PREFIX"),
        (
            {"GATEWAY_STORE": "dynamodb", "GATEWAY_JWKS_URL": "https://idp.test/jwks.json"},
            "GATEWAY_CURSOR_KEY",
        ),
    ],
)
def test_store_settings_are_validated(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_store_settings_defaults_and_env() -> None:
    assert (Settings().store, Settings().dynamodb_prefix) == ("sqlite", "gateway")
    settings = Settings.from_env({"GATEWAY_STORE": "dynamodb", "GATEWAY_DYNAMODB_PREFIX": "c.p-1"})
    assert (settings.store, settings.dynamodb_prefix) == ("dynamodb", "c.p-1")
    assert os.path.basename(settings.data_dir) == "data"
