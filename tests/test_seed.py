"""``gateway seed``: the demo workspace, idempotent, and readable by a node started after."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from gateway.app import open_gateway
from gateway.bus.base import Bus
from gateway.bus.memory import open_memory_bus
from gateway.domain.model import ChannelKind, Role, dm_channel_id
from gateway.seed import SeedConflict, SeedReport, seed
from gateway.store.domain import MAX_PAGE, DomainStore
from gateway.store.domain_sqlite import open_sqlite_domain_store
from gateway.store.message_state import MessageStateStore
from gateway.store.message_state_sqlite import open_sqlite_message_state
from gateway.store.sqlite import open_sqlite_store
from tests.conftest import SECRET, make_settings, token

CURSOR_KEY = b"seed-tests-cursor-key-0123456789"
DEADLINE = 30


@asynccontextmanager
async def open_site(root: Path) -> AsyncIterator[tuple[DomainStore, Bus, MessageStateStore]]:
    """The stores the app opens, in ``root``: the domain store, a memory bus on SQLite."""
    async with (
        open_sqlite_domain_store(str(root / "domain.sqlite3"), CURSOR_KEY) as domain,
        open_sqlite_store(str(root / "messages.sqlite3")) as store,
        open_memory_bus(store) as bus,
        open_sqlite_message_state(str(root / "message-state.sqlite3")) as states,
    ):
        yield domain, bus, states


async def snapshot(domain: DomainStore, bus: Bus, report: SeedReport) -> dict[str, object]:
    """Everything the seed touches, as comparable values."""
    members = await domain.list_members("acme", limit=MAX_PAGE)
    channels = await domain.list_channels("acme", limit=MAX_PAGE)
    state: dict[str, object] = {
        "members": sorted((m.user, m.role) for m in members.items),
        "channels": [(c.name, c.kind, c.id) for c in channels.items],
    }
    for c in report.channels:
        listed = await domain.list_channel_members(c.id, limit=MAX_PAGE)
        state[f"members {c.label}"] = [m.user for m in listed.items]
        state[f"log {c.label}"] = [
            (r.offset, r.sender, r.cmid, r.body, r.thread) for r in await bus.read(c.id, 0, 100)
        ]
    return state


async def test_seed_loads_the_demo_workspace_once(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with open_site(tmp_path) as (domain, bus, states):
            first = await seed(domain, bus, states, now_ms=1234)
            assert first.at_ms == 1234 and first.messages_added == 9
            assert "workspace acme" in first.created and "channel #design" in first.created

            for user, name in (("alice", "Alice Anders"), ("dave", "Dave Dunn")):
                found = await domain.get_user(user)
                assert found is not None and found.display_name == name
                assert found.email == f"{user}@acme.example"
            workspace = await domain.get_workspace("acme")
            assert workspace is not None and workspace.owner == "alice"
            assert workspace.name == "Acme"
            roles = {m.user: m.role for m in (await domain.list_members("acme", limit=10)).items}
            assert roles == {
                "alice": Role.OWNER,
                "bob": Role.ADMIN,
                "carol": Role.MEMBER,
                "dave": Role.GUEST,
            }

            channels = {c.name: c for c in (await domain.list_channels("acme", limit=10)).items}
            assert list(channels) == ["general", "random", "design"]
            assert channels["general"].kind is ChannelKind.PUBLIC
            assert channels["design"].kind is ChannelKind.PRIVATE
            state = await snapshot(domain, bus, first)
            assert state["members general"] == ["alice", "bob", "carol", "dave"]
            assert state["members random"] == ["alice", "bob", "carol"]
            assert state["members design"] == ["alice", "carol"]
            assert first.channel("general").id == channels["general"].id

            dm = dm_channel_id("acme", ["alice", "bob"])
            group = dm_channel_id("acme", ["alice", "bob", "carol"])
            assert first.channel("alice+bob").id == dm
            conversation = await domain.get_conversation(group)
            assert conversation is not None
            assert conversation.participants == ("alice", "bob", "carol")

            general = list(await bus.read(channels["general"].id, 0, 100))
            messages = [r for r in general if not r.kind]
            assert [r.sender for r in messages] == ["alice", "bob", "carol", "dave"]
            assert [r.kind for r in general] == ["", "", "", "thread", ""]  # the summary
            thread = list(await bus.read(f"{general[2].channel}:t{general[2].offset}", 0, 10))
            assert [(r.sender, r.thread) for r in thread] == [("alice", general[2].id)]
            assert (await states.get_states(general[2].channel, [3]))[3].replies == 1
            assert len(await bus.read(channels["design"].id, 0, 100)) == 2
            assert [r.sender for r in await bus.read(dm, 0, 100)] == ["alice", "bob"]
            assert await bus.read(group, 0, 100) == []

            again = await seed(domain, bus, states)
            assert again.created == ()
            assert (again.messages_added, again.messages_existing) == (0, 9)
            assert again.channels == first.channels
            assert await snapshot(domain, bus, again) == state

        async with open_site(tmp_path) as (domain, bus, states):  # a fresh process: no caches
            third = await seed(domain, bus, states)
            assert third.created == () and third.messages_added == 0
            assert await snapshot(domain, bus, third) == state


async def test_seed_refuses_a_workspace_it_did_not_make(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with open_site(tmp_path) as (domain, bus, states):
            await domain.create_user("mallory", "m@acme.example", "Mallory")
            await domain.create_workspace("Not Acme", owner="mallory", workspace_id="acme")
            with pytest.raises(SeedConflict, match="another owner"):
                await seed(domain, bus, states)


async def test_seed_command_then_a_node_serves_the_history(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(data), "GATEWAY_JWT_SECRET": SECRET}
    with trio.fail_after(DEADLINE):
        for _ in range(2):  # the second run changes nothing
            proc = await trio.run_process(
                [sys.executable, "-m", "gateway", "seed"],
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr.decode()
        out = proc.stdout.decode()
        assert "created: nothing" in out and "9 already there" in out
        assert "gateway token --user alice" in out

        async with open_gateway(make_settings(data)) as gw:
            listed = await gw.node.domain.list_channels("acme", limit=10)
            general = next(c.id for c in listed.items if c.name == "general")
            assert general in out
            auth = {"authorization": f"Bearer {token('alice', channels=[general])}"}
            async with httpx.AsyncClient(base_url=gw.http_url, headers=auth) as http:
                r = await http.get(f"/v1/channels/{general}/messages")
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["head"] == 5
                messages = body["messages"]
                assert [m["sender"] for m in messages] == ["alice", "bob", "carol", "dave"]
                assert messages[0]["body"].startswith("Welcome to Acme")
                assert (messages[2]["replies"], messages[2]["participants"]) == (1, ["alice"])
                r = await http.get(f"/v1/channels/{dm_channel_id('acme', ['bob'])}/messages")
                assert r.status_code == 403  # the token is for #general only
