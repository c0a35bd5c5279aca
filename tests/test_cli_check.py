"""``gateway check`` (one line per resource, exit 0/1) and ``gateway serve`` refusing to
start without its infrastructure, as subprocesses against moto's server and Redis."""

from __future__ import annotations

import socket
import sys
import uuid
from pathlib import Path

import trio

from gateway.store.tables import DOMAIN, FILES, TABLES, create_bucket, create_tables
from tests.aws import connect

T = 90  # seconds: deadline of each test body (each subprocess imports the gateway)


def aws_env(tmp_path: Path, moto_url: str, prefix: str, bucket: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_STORE": "dynamodb",
        "GATEWAY_DYNAMODB_PREFIX": prefix,
        "GATEWAY_S3_BUCKET": bucket,
        "GATEWAY_AWS_ENDPOINT_URL": moto_url,
        "GATEWAY_JWT_SECRET": "cli-check-secret-0123456789abcdef0123",
        "GATEWAY_LOG_LEVEL": "ERROR",
        # botocore's credential chain, from the environment only
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


async def gateway(*args: str, env: dict[str, str]) -> tuple[int, list[str], str]:
    """Run ``python -m gateway args``: exit status, stdout lines, stderr."""
    proc = await trio.run_process(
        [sys.executable, "-m", "gateway", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )
    return proc.returncode, proc.stdout.decode().splitlines(), proc.stderr.decode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_check_passes_on_a_complete_setup(tmp_path: Path, moto_url: str) -> None:
    prefix, bucket = f"chk-{uuid.uuid4().hex[:10]}", f"chk-{uuid.uuid4().hex[:12]}"
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            await create_tables(aws, prefix, TABLES)
            await create_bucket(aws, bucket)
        code, lines, err = await gateway("check", env=aws_env(tmp_path, moto_url, prefix, bucket))
    assert code == 0, (lines, err)
    assert lines[0] == f"store: dynamodb (tables {prefix}-*)"
    assert lines[1] == f"data dir {tmp_path / 'data'}: ok"  # created by serve, not by check
    assert lines[2:] == [
        *(f"{spec.name(prefix)}: ok" for spec in TABLES),
        f"bucket {bucket}: ok",
    ]
    assert not (tmp_path / "data").exists()


async def test_check_names_what_is_missing_or_wrong(tmp_path: Path, moto_url: str) -> None:
    prefix, bucket = f"chk-{uuid.uuid4().hex[:10]}", f"chk-{uuid.uuid4().hex[:12]}"
    with trio.fail_after(T):
        async with connect(moto_url) as aws:
            await create_tables(aws, prefix, [s for s in TABLES if s not in (DOMAIN, FILES)])
            # the files table without its index and TTL
            await aws.dynamodb(
                "create_table",
                TableName=FILES.name(prefix),
                KeySchema=FILES.key_schema(),
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        env = aws_env(tmp_path, moto_url, prefix, bucket)
        code, lines, err = await gateway("check", env=env)
        assert code == 1, (lines, err)
        by_resource = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
        assert by_resource[DOMAIN.name(prefix)] == "missing"
        assert "index pending_by_owner missing" in by_resource[FILES.name(prefix)]
        assert by_resource[f"bucket {bucket}"] == "missing"
        assert all(
            by_resource[spec.name(prefix)] == "ok" for spec in TABLES if spec not in (DOMAIN, FILES)
        )

        # serve refuses to start, naming all of it, and creates nothing
        code, lines, err = await gateway("serve", "--ws-port", "0", "--http-port", "0", env=env)
        assert code == 1, (lines, err)
        assert "Traceback" not in err
        assert "cannot start" in err
        assert f"{DOMAIN.name(prefix)}: missing" in err
        assert f"bucket {bucket}: missing" in err
        async with connect(moto_url) as aws:
            names = (await aws.dynamodb("list_tables", ExclusiveStartTableName=prefix))[
                "TableNames"
            ]
        assert DOMAIN.name(prefix) not in names


async def test_aws_unreachable_is_reported_not_raised(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{closed_port()}"
    env = aws_env(tmp_path, nowhere, "chk-nowhere", "chk-nowhere")
    with trio.fail_after(T):
        code, lines, err = await gateway("check", env=env)
        assert code == 1, (lines, err)
        first, *others, bucket = lines[2:]
        assert first.startswith(f"{TABLES[0].name('chk-nowhere')}: dynamodb describe_table at ")
        assert "EndpointConnectionError" in first
        assert others == [
            f"{spec.name('chk-nowhere')}: not checked: AWS unavailable (EndpointConnectionError)"
            for spec in TABLES[1:]
        ]
        assert bucket.startswith("bucket chk-nowhere: s3 head_bucket at "), lines
        assert "Traceback" not in err

        code, lines, err = await gateway("serve", "--ws-port", "0", "--http-port", "0", env=env)
        assert code == 1, (lines, err)
        assert "cannot start" in err and "Traceback" not in err


async def test_check_on_the_embedded_default(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(data)}
    with trio.fail_after(T):
        code, lines, err = await gateway("check", env=env)
        assert (code, lines) == (0, ["store: sqlite", f"data dir {data}: ok"]), err

        code, lines, err = await gateway("check", env=env | {"GATEWAY_REDIS_URL": redis_url})
        assert (code, lines[-1]) == (0, f"redis {redis_url}: ok"), err

        down = f"redis://127.0.0.1:{closed_port()}"
        code, lines, err = await gateway("check", env=env | {"GATEWAY_REDIS_URL": down})
        assert code == 1, (lines, err)
        assert lines[-1].startswith(f"redis {down}: unreachable"), lines

        # a data dir that cannot be written
        (tmp_path / "file").write_text("not a directory")
        blocked = {"GATEWAY_DATA_DIR": str(tmp_path / "file" / "data")}
        code, lines, err = await gateway("check", env=env | blocked)
        assert code == 1, (lines, err)
        assert lines[1].startswith(f"data dir {tmp_path / 'file' / 'data'}: "), lines
        assert "not a directory" in lines[1]


async def test_check_reports_an_invalid_setting(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_STORE": "dynamodb", "GATEWAY_DYNAMODB_PREFIX": "a b"}
    with trio.fail_after(T):
        code, lines, err = await gateway("check", "--data-dir", str(tmp_path), env=env)
    assert (code, lines) == (2, [])
    assert "GATEWAY_DYNAMODB_PREFIX" in err
