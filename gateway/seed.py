"""``gateway seed``: a small demo workspace, loaded through the domain store and the bus.

Workspace ``acme`` ("Acme"): alice (owner), bob (admin), carol (member), dave (guest);
channels #general (public, everyone), #random (public: alice, bob, carol) and #design
(private: alice, carol); a DM alice+bob and a group DM alice+bob+carol; a few messages in
#general (one of them a thread reply), #design and the DM.

Idempotent: users and the workspace have fixed ids, channels are found again by name,
memberships and DMs are idempotent in the store, and every message has a fixed client
message id (``seed-...``), which the bus deduplicates. Messages already at the start of
a channel's log are recognised before appending too, so a bus whose idempotency is
bounded to a window (the Redis bus) does not double them on a later run either.
"""

from __future__ import annotations

import dataclasses
import textwrap
import time
from collections.abc import Sequence

from gateway.actors.messages import MessageService
from gateway.bus.base import Bus
from gateway.domain.errors import AlreadyExists
from gateway.domain.model import Channel, ChannelKind, Role, check_participants, dm_channel_id
from gateway.model import Record
from gateway.protocol.frames import Publish
from gateway.store.domain import MAX_PAGE, DomainStore
from gateway.store.message_state import MessageStateStore

__all__ = [
    "CHANNELS",
    "DMS",
    "MESSAGES",
    "USERS",
    "WORKSPACE",
    "SeedConflict",
    "SeedReport",
    "SeededChannel",
    "format_report",
    "seed",
]

WORKSPACE = "acme"
WORKSPACE_NAME = "Acme"
OWNER = "alice"
DOMAIN = "acme.example"

# (id, display name, role in the workspace)
USERS: tuple[tuple[str, str, Role], ...] = (
    ("alice", "Alice Anders", Role.OWNER),
    ("bob", "Bob Brown", Role.ADMIN),
    ("carol", "Carol Chen", Role.MEMBER),
    ("dave", "Dave Dunn", Role.GUEST),
)

# (name, kind, creator, topic, members besides the creator)
CHANNELS: tuple[tuple[str, ChannelKind, str, str, tuple[str, ...]], ...] = (
    (
        "general",
        ChannelKind.PUBLIC,
        "alice",
        "Company-wide news and chat",
        ("bob", "carol", "dave"),
    ),
    ("random", ChannelKind.PUBLIC, "bob", "Anything goes", ("alice", "carol")),
    ("design", ChannelKind.PRIVATE, "alice", "Mockups and reviews", ("carol",)),
)

# (label, opener, the others)
DMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("alice+bob", "alice", ("bob",)),
    ("alice+bob+carol", "alice", ("bob", "carol")),
)

# (channel label, sender, cmid, body, cmid of the thread's parent)
MESSAGES: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("general", "alice", "seed-general-1", "Welcome to Acme! #general is for everyone.", None),
    ("general", "bob", "seed-general-2", "Hi all, glad to be here.", None),
    ("general", "carol", "seed-general-3", "Design review is on Thursday at 10.", None),
    ("general", "alice", "seed-general-4", "Thanks Carol, I'll be there.", "seed-general-3"),
    ("general", "dave", "seed-general-5", "Hello from the guest side.", None),
    ("design", "carol", "seed-design-1", "First onboarding mockups are up.", None),
    ("design", "alice", "seed-design-2", "Looks great: let's ship the second variant.", None),
    ("alice+bob", "alice", "seed-dm-1", "Do you have a minute for the Q3 plan?", None),
    ("alice+bob", "bob", "seed-dm-2", "Sure, call in five?", None),
)

_LOOKBACK = 200  # records read from the start of a log to recognise earlier seed messages


class SeedConflict(Exception):
    """The data dir holds records that contradict the demo (e.g. ``acme`` has another
    owner, or a demo email belongs to another user): nothing more is changed."""


@dataclasses.dataclass(frozen=True)
class SeededChannel:
    label: str  # "general" for channels, "alice+bob" for DMs
    id: str  # the bus log name, for tokens, subscribe and REST
    kind: ChannelKind
    members: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SeedReport:
    """What :func:`seed` found or made. ``created`` lists what this run created (empty on a
    repeated run); ``messages_added``/``messages_existing`` count the seed messages."""

    workspace: str
    users: tuple[str, ...]
    channels: tuple[SeededChannel, ...]
    created: tuple[str, ...]
    messages_added: int
    messages_existing: int
    at_ms: int

    def channel(self, label: str) -> SeededChannel:
        return next(c for c in self.channels if c.label == label)


async def seed(
    domain: DomainStore, bus: Bus, states: MessageStateStore, *, now_ms: int | None = None
) -> SeedReport:
    """Load the demo workspace (see the module docstring); safe to run again.

    ``now_ms`` only stamps the report (``at_ms``): records carry their stores' own times.
    Raises :class:`SeedConflict`, or the stores' errors (``StoreUnavailable``,
    ``DomainError``) with whatever was done so far kept (running again completes it).
    """
    at_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    created: list[str] = []

    for user_id, display_name, _ in USERS:
        email = f"{user_id}@{DOMAIN}"
        try:
            await domain.create_user(user_id, email, display_name)
            created.append(f"user {user_id}")
        except AlreadyExists as exc:
            if exc.reason != "user":
                raise SeedConflict(f"email {email} belongs to another user") from exc

    try:
        await domain.create_workspace(WORKSPACE_NAME, owner=OWNER, workspace_id=WORKSPACE)
        created.append(f"workspace {WORKSPACE}")
    except AlreadyExists:
        found = await domain.get_workspace(WORKSPACE)
        if found is None or found.owner != OWNER:
            raise SeedConflict(f"workspace {WORKSPACE!r} exists with another owner") from None
    for user_id, _, role in USERS:
        if role is not Role.OWNER and await domain.add_member(
            WORKSPACE, user_id, role, actor=OWNER
        ):
            created.append(f"{role} {user_id} of {WORKSPACE}")

    channels: dict[str, SeededChannel] = {}
    for name, kind, creator, topic, others in CHANNELS:
        channel, made = await _channel(
            domain, name, kind, creator=creator, topic=topic, position=len(channels)
        )
        if made:
            created.append(f"channel #{name}")
        for user_id in others:
            if await domain.join_channel(channel.id, user_id, actor=OWNER):
                created.append(f"{user_id} in #{name}")
        channels[name] = SeededChannel(name, channel.id, kind, tuple(sorted((creator, *others))))

    for label, opener, others in DMS:
        existed = await _dm_exists(domain, opener, others)
        conversation = await domain.open_dm(WORKSPACE, others, actor=opener)
        if not existed:
            created.append(f"DM {label}")
        channels[label] = SeededChannel(
            label, conversation.id, ChannelKind.DM, conversation.participants
        )

    messages = MessageService(bus, states, domain)
    added = existing = 0
    seen: dict[str, dict[tuple[str, str], Record]] = {}
    ids: dict[str, str] = {}  # cmid -> message id, for thread replies
    for label, sender, cmid, body, parent in MESSAGES:
        log = channels[label].id
        if log not in seen:
            seen[log] = {(r.sender, r.cmid): r for r in await bus.read(log, 0, _LOOKBACK)}
        record = seen[log].get((sender, cmid))
        if record is None:
            thread = ids[parent] if parent is not None else None
            # as a client's publish: a reply goes to the thread's log, with its summary
            frame = Publish(channel=log, cmid=cmid, body=body, thread=thread)
            appended = await messages.publish(sender, frame)
            record = appended.record
            if appended.duplicate:
                existing += 1
            else:
                added += 1
        else:
            existing += 1
        ids[cmid] = record.id
    if added:
        created.append(f"{added} messages")

    return SeedReport(
        workspace=WORKSPACE,
        users=tuple(user_id for user_id, _, _ in USERS),
        channels=tuple(channels.values()),
        created=tuple(created),
        messages_added=added,
        messages_existing=existing,
        at_ms=at_ms,
    )


async def _channel(
    domain: DomainStore, name: str, kind: ChannelKind, *, creator: str, topic: str, position: int
) -> tuple[Channel, bool]:
    """The workspace's channel ``name``, created if missing; and whether it was."""
    try:
        made = await domain.create_channel(
            WORKSPACE, name, kind, actor=creator, topic=topic, position=position
        )
        return made, True
    except AlreadyExists:
        pass
    cursor: str | None = None
    while True:
        page = await domain.list_channels(WORKSPACE, limit=MAX_PAGE, cursor=cursor)
        for channel in page.items:
            if channel.name == name:
                return channel, False
        if page.cursor is None:
            raise SeedConflict(f"channel #{name} is taken but not listed")  # pragma: no cover
        cursor = page.cursor


async def _dm_exists(domain: DomainStore, opener: str, others: Sequence[str]) -> bool:
    channel = dm_channel_id(WORKSPACE, check_participants(opener, others))
    return await domain.get_conversation(channel) is not None


def format_report(report: SeedReport, *, data_dir: str, http_url: str, ws_url: str) -> str:
    """What :func:`seed` did and how to connect, for the terminal."""
    lines = [f"workspace {report.workspace} ({WORKSPACE_NAME}), data in {data_dir}"]
    if report.created:
        made = "created: " + ", ".join(report.created)
        lines += textwrap.wrap(made, width=88, subsequent_indent="  ", break_on_hyphens=False)
    else:
        lines.append("created: nothing (already seeded)")
    roles = {user_id: role for user_id, _, role in USERS}
    lines.append("users: " + ", ".join(f"{u} ({roles[u]})" for u in report.users))
    lines.append("channels:")
    for c in report.channels:
        name = f"#{c.label}" if c.kind is not ChannelKind.DM else f"DM {c.label}"
        lines.append(f"  {name:<20} {c.id}  {c.kind}: {', '.join(c.members)}")
    lines.append(
        f"messages: {report.messages_added} added, {report.messages_existing} already there"
    )
    general = report.channel("general").id
    dd = f" --data-dir {data_dir}"
    lines += [
        "connect (channels are addressed by id):",
        f"  gateway token --user alice{dd}",
        f"  gateway chat --user alice --channel {general} --url {ws_url}{dd}",
        f'  curl -H "Authorization: Bearer $(gateway token --user alice{dd})" '
        f"{http_url}/v1/channels/{general}/messages",
    ]
    return "\n".join(lines)
