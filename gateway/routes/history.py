"""History pages: log entries as a client shows them (current bodies, reactions, threads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.model import Record
from gateway.store.message_state import MAX_GET_STATES, MessageState, MessageStateStore

__all__ = ["history_entries"]

_AS_POSTED = MessageState(channel="", offset=0, author="")


async def history_entries(
    states: MessageStateStore, channel: str, records: Sequence[Record], *, events: bool
) -> list[dict[str, Any]]:
    """Messages of ``records`` with their current state (edits, tombstones, reaction
    counts, thread summaries); with ``events``, the other log entries too, as
    ``{"offset", "id", "kind", "sender", "ts", "data"}`` (``data``: the event's payload)."""
    offsets = [r.offset for r in records if not r.kind]
    found: dict[int, MessageState] = {}
    for i in range(0, len(offsets), MAX_GET_STATES):
        found |= await states.get_states(channel, offsets[i : i + MAX_GET_STATES])
    out: list[dict[str, Any]] = []
    for r in records:
        if r.kind:
            if events:
                data = msgspec.json.decode(r.body)
                out.append(
                    {
                        "offset": r.offset,
                        "id": r.id,
                        "kind": r.kind,
                        "sender": r.sender,
                        "ts": r.ts,
                        "data": data,
                    }
                )
            continue
        st = found.get(r.offset, _AS_POSTED)
        out.append(
            {
                "offset": r.offset,
                "id": r.id,
                "kind": "message",
                "sender": r.sender,
                "cmid": r.cmid,
                "body": r.body if st.body is None else st.body,
                "ts": r.ts,
                "thread": r.thread,
                "files": list(r.files),
                "version": st.version,
                "deleted": st.deleted,
                "edited_ms": st.edited_ms,
                "reactions": st.reactions,
                "replies": st.replies,
                "last_reply_ms": st.last_reply_ms,
                "participants": list(st.participants),
            }
        )
    return out
