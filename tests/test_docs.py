"""The documents in docs/ (and the OpenAPI document in gateway/routes/) stay true to the
code: frames, codes, settings, routes, metrics."""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
import yaml

from gateway.config import Limits, Settings
from gateway.domain.model import (
    Channel,
    ChannelMember,
    Conversation,
    Member,
    User,
    Workspace,
)
from gateway.errors import RETRYABLE, CloseCode, ErrorCode, may_resume
from gateway.metrics import Metrics
from gateway.protocol import JSON
from gateway.protocol import frames as f
from gateway.routes.domain_api import openapi_document
from gateway.routes.domain_channels import ChannelMembership, ChannelPatch, DmBody, NewChannel
from gateway.routes.domain_users import ProfileBody
from gateway.routes.domain_workspaces import MemberBody, NewWorkspace
from gateway.routes.rest import create_rest_app

DOCS = Path(__file__).resolve().parent.parent / "docs"
CLIENT_FRAMES: tuple[type[msgspec.Struct], ...] = get_args(f.ClientFrames)
SERVER_FRAMES: tuple[type[msgspec.Struct], ...] = get_args(f.ServerFrames)
ALL_FRAMES = CLIENT_FRAMES + SERVER_FRAMES
LIMIT_KEYWORDS = frozenset(
    {"maxLength", "minLength", "pattern", "minimum", "maximum", "maxProperties", "type"}
)
SKIPPED_KEYWORDS = frozenset({"description", "default", "title", "examples", "enum", "summary"})


@functools.cache
def _text(name: str) -> str:
    if name == "openapi.yaml":  # ships in the package (gateway/routes), served by the app
        return openapi_document().decode("utf-8")
    return (DOCS / name).read_text(encoding="utf-8")


@functools.cache
def _yaml(name: str) -> dict[str, Any]:
    doc = yaml.safe_load(_text(name))
    assert isinstance(doc, dict)
    return doc


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow local ``$ref``s (``#/a/b``) until a non-reference node."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    return field.default_factory()


def _constraints(root: dict[str, Any], node: Any) -> set[tuple[str, Any]]:
    """Every type and limit keyword in a schema, with ``$ref``s followed."""
    node = _resolve(root, node)
    found: set[tuple[str, Any]] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SKIPPED_KEYWORDS:
                continue
            if key in LIMIT_KEYWORDS and not isinstance(value, dict | list):
                found.add((key, value))
            else:
                found |= _constraints(root, value)
    elif isinstance(node, list):
        for item in node:
            found |= _constraints(root, item)
    return found


def _message(cls: type[msgspec.Struct]) -> dict[str, Any]:
    doc = _yaml("asyncapi.yaml")
    message = _resolve(doc, doc["components"]["messages"][cls.__name__])
    assert isinstance(message, dict)
    return message


def _payload(cls: type[msgspec.Struct]) -> dict[str, Any]:
    doc = _yaml("asyncapi.yaml")
    payload = _resolve(doc, _message(cls)["payload"])
    assert isinstance(payload, dict)
    return payload


def _section(text: str, heading: str) -> str:
    """The text of the markdown section whose heading starts with ``heading``."""
    match = re.search(rf"^(#+) {re.escape(heading)}.*$", text, re.MULTILINE)
    assert match, heading
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def _table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# ------------------------------------------------------------------------ AsyncAPI


def test_asyncapi_version_is_3() -> None:
    assert str(_yaml("asyncapi.yaml")["asyncapi"]).startswith("3.")


def test_asyncapi_operations_list_every_frame_by_direction() -> None:
    doc = _yaml("asyncapi.yaml")
    by_action: dict[str, set[str]] = {}
    for op in doc["operations"].values():
        assert _resolve(doc, op["channel"])["address"] == "/ws"
        names = {_resolve(doc, m)["name"] for m in op["messages"]}
        by_action.setdefault(op["action"], set()).update(names)
    assert by_action == {
        "receive": {c.__name__ for c in CLIENT_FRAMES},
        "send": {c.__name__ for c in SERVER_FRAMES},
    }


@pytest.mark.parametrize("cls", ALL_FRAMES, ids=lambda c: c.__name__)
def test_asyncapi_payload_matches_struct(cls: type[msgspec.Struct]) -> None:
    payload = _payload(cls)
    fields = msgspec.structs.fields(cls)
    assert payload["type"] == "object"
    assert payload["properties"]["type"] == {"const": _tag(cls)}
    assert set(payload["properties"]) == {fi.name for fi in fields} | {"type"}
    assert set(payload["required"]) == {fi.name for fi in fields if fi.required} | {"type"}
    for fi in fields:
        if not fi.required:
            assert payload["properties"][fi.name]["default"] == _default(fi), fi.name


@pytest.mark.parametrize("cls", ALL_FRAMES, ids=lambda c: c.__name__)
def test_asyncapi_limits_match_struct(cls: type[msgspec.Struct]) -> None:
    (own,), components = msgspec.json.schema_components((cls,), ref_template="#/defs/{name}")
    truth = {"defs": components}
    truth_props = _resolve(truth, own)["properties"]
    doc = _yaml("asyncapi.yaml")
    props = _payload(cls)["properties"]
    for name in truth_props:
        if name == "type":
            continue
        assert _constraints(doc, props[name]) == _constraints(truth, truth_props[name]), name


@pytest.mark.parametrize("cls", ALL_FRAMES, ids=lambda c: c.__name__)
def test_asyncapi_examples_decode(cls: type[msgspec.Struct]) -> None:
    examples = _message(cls)["examples"]
    assert examples
    for example in examples:
        data = msgspec.json.encode(example["payload"])
        frame = JSON.decode_client(data) if cls in CLIENT_FRAMES else JSON.decode_server(data)
        assert type(frame) is cls


def test_asyncapi_error_codes_enum() -> None:
    codes = _payload(f.Error)["properties"]["code"]["enum"]
    assert sorted(codes) == sorted(c.value for c in ErrorCode)


# ------------------------------------------------------------------------ protocol.md


@pytest.mark.parametrize(
    ("heading", "frames", "decode"),
    [
        ("4. Client frames", CLIENT_FRAMES, JSON.decode_client),
        ("5. Server frames", SERVER_FRAMES, JSON.decode_server),
    ],
    ids=["client", "server"],
)
def test_protocol_examples_decode_and_cover_every_frame(
    heading: str, frames: tuple[type[msgspec.Struct], ...], decode: Any
) -> None:
    section = _section(_text("protocol.md"), heading)
    blocks = re.findall(r"```json\n(.*?)\n```", section, re.DOTALL)
    decoded = {type(decode(block.encode())) for block in blocks}
    assert decoded == set(frames)


def test_protocol_error_code_table() -> None:
    section = _section(_text("protocol.md"), "12. Error codes")
    table = {row[0].strip("`"): row[1] for row in _table_rows(section) if row[0].startswith("`")}
    assert table == {c.value: "yes" if c in RETRYABLE else "no" for c in ErrorCode}
    text = _text("protocol.md")
    for code in ErrorCode:
        assert f"`{code.value}`" in text


def test_protocol_close_code_table() -> None:
    section = _section(_text("protocol.md"), "13. Close codes")
    rows = {int(r[0]): r for r in _table_rows(section) if r[0].isdigit()}
    for code in CloseCode:
        assert code.value in rows, code
        assert rows[code.value][1] == f"`{code.name}`"
    for number, row in rows.items():
        assert row[-1].split()[0] == ("yes" if may_resume(number) else "no"), number


def test_protocol_limits_table_defaults() -> None:
    section = _section(_text("protocol.md"), "10. Limits")
    rows = {r[0].strip("`"): r[1] for r in _table_rows(section) if r[0].startswith("`")}
    for field in dataclasses.fields(Limits):
        assert float(rows[field.name]) == getattr(Limits(), field.name), field.name


# ------------------------------------------------------------------------ operations.md


def _env_fields() -> list[tuple[str, Any]]:
    """(variable, default) for every setting read from the environment."""
    out = [
        (f"GATEWAY_{fi.name.upper()}", getattr(Settings(), fi.name))
        for fi in dataclasses.fields(Settings)
        if fi.name != "limits"  # a group, not a variable: its fields are listed below
    ]
    out += [
        (f"GATEWAY_{fi.name.upper()}", getattr(Limits(), fi.name))
        for fi in dataclasses.fields(Limits)
    ]
    return out


def test_operations_lists_every_env_var_with_its_default() -> None:
    rows = {
        r[0].strip("`"): r[1]
        for r in _table_rows(_text("operations.md"))
        if r[0].startswith("`GATEWAY_")
    }
    for name, default in _env_fields():
        assert name in rows, name
        cell = rows[name]
        raw = "" if cell == "(empty)" else cell.strip("`")
        settings = Settings.from_env({name: raw})
        field = name.removeprefix("GATEWAY_").lower()
        value = getattr(settings.limits if hasattr(Limits(), field) else settings, field)
        assert value == default, (name, cell)


def test_docs_name_only_real_env_vars() -> None:
    known = {name for name, _ in _env_fields()}
    for doc in ("operations.md", "protocol.md", "architecture.md"):
        named = set(re.findall(r"GATEWAY_[A-Z][A-Z0-9_]*", _text(doc)))
        assert named <= known, (doc, named - known)


def test_operations_lists_every_metric() -> None:
    text = _text("operations.md")
    for family in Metrics().registry.collect():
        assert f"`{family.name}" in text, family.name
        if family.type == "counter":
            assert f"`{family.name}_total`" in text, family.name


# ------------------------------------------------------------------------ OpenAPI


def test_openapi_version_is_3_1() -> None:
    assert str(_yaml("openapi.yaml")["openapi"]).startswith("3.1.")


def test_openapi_paths_match_the_rest_app() -> None:
    # The node is only used inside request handlers; building the routes needs none.
    app = create_rest_app(None)  # type: ignore[arg-type]
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":  # Quart's default static route; no folder, always 404
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = {m.lower() for m in rule.methods or ()} - {"head", "options"}
        routes.setdefault(path, set()).update(methods)
    paths = _yaml("openapi.yaml")["paths"]
    assert set(paths) == set(routes)
    for path, methods in routes.items():
        documented = set(paths[path]) - {"parameters", "summary", "description"}
        assert documented == methods, path


def test_openapi_error_codes_enum() -> None:
    doc = _yaml("openapi.yaml")
    error = _resolve(doc, doc["components"]["schemas"]["Error"])
    codes = error["properties"]["error"]["properties"]["code"]["enum"]
    assert sorted(codes) == sorted(c.value for c in ErrorCode)


DOMAIN_BODIES: tuple[type[msgspec.Struct], ...] = (
    ProfileBody,
    NewWorkspace,
    MemberBody,
    NewChannel,
    ChannelPatch,
    DmBody,
)
DOMAIN_RECORDS: tuple[type[msgspec.Struct], ...] = (
    User,
    Workspace,
    Member,
    Channel,
    ChannelMember,
    Conversation,
    ChannelMembership,
)


def _limits(root: dict[str, Any], node: Any) -> set[tuple[str, Any]]:
    """:func:`_constraints`, with msgspec's ``$(?!\\n)`` written as ECMA-262's ``$``."""
    return {
        (key, value.replace(r"$(?!\n)", "$") if key == "pattern" else value)
        for key, value in _constraints(root, node)
    }


@pytest.mark.parametrize("cls", DOMAIN_BODIES + DOMAIN_RECORDS, ids=lambda c: c.__name__)
def test_openapi_domain_schemas_match_structs(cls: type[msgspec.Struct]) -> None:
    """Request bodies are decoded with these Structs and responses are these records: the
    document's fields, required fields and limits are theirs."""
    (own,), components = msgspec.json.schema_components((cls,), ref_template="#/defs/{name}")
    truth = {"defs": components}
    truth_schema = _resolve(truth, own)
    doc = _yaml("openapi.yaml")
    schema = _resolve(doc, doc["components"]["schemas"][cls.__name__])
    assert set(schema["properties"]) == set(truth_schema["properties"])
    if cls in DOMAIN_BODIES:
        assert schema["additionalProperties"] is False
        assert set(schema.get("required", [])) == set(truth_schema["required"])
    else:  # responses carry every field
        assert set(schema["required"]) == set(schema["properties"])
    for name, prop in truth_schema["properties"].items():
        assert _limits(doc, schema["properties"][name]) == _limits(truth, prop), name
