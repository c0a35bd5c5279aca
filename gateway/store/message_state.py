"""The message-state store: the current state of a message beside its immutable record.

A channel's log (:mod:`gateway.store.base`) never changes; what a message looks like *now*
lives here, one row per changed message, keyed by ``(channel, offset)``: its edits
(versioned, a stale edit is refused), its delete (a tombstone), its reactions (per user
and emoji, aggregated counts) and, on a thread's parent, the thread summary (replies,
last reply time, participants). Messages never changed have no row.

This store does not decide *who* may change a message: the caller (the messaging
service) does, passes the record's sender as ``author``, appends the change as an event
to the channel log and fans it out. The store keeps the state consistent under
concurrency and retries.

Shaped for DynamoDB like :mod:`gateway.store.domain`: every method is **one**
``BatchGetItem``, ``GetItem``/``Query``, or **one** conditional write /
``TransactWriteItems``. Each method's docstring names its access pattern;
``docs/data-model.md`` ("MessageStateStore") maps every pattern to keys.

Adapters: :mod:`gateway.store.message_state_sqlite` (embedded default) and
:mod:`gateway.store.message_state_dynamodb`. Every adapter passes
``tests/contract/test_message_state_contract.py``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Protocol

import msgspec

from gateway.domain.errors import InvalidField

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_EMOJI_CHARS",
    "MAX_GET_STATES",
    "MAX_ID_CHARS",
    "MAX_OP_CHARS",
    "MAX_PARTICIPANTS",
    "MessageState",
    "MessageStateStatistics",
    "MessageStateStore",
    "check_body",
    "check_emoji",
    "check_id",
    "check_offset",
    "check_op",
]

MAX_PARTICIPANTS = 20  # distinct repliers kept in a thread summary (first-reply order)
MAX_GET_STATES = 100  # offsets per get_states call (DynamoDB: one BatchGetItem)
# UTF-8 bytes of an edited body: the protocol's hard cap (65,536 characters of at most
# 4 bytes). The configured, smaller Limits.max_body_bytes is enforced by the session
# before a change reaches the store, as for messages.
MAX_BODY_BYTES = 4 * 65536
MAX_EMOJI_CHARS = 64
MAX_OP_CHARS = 128  # an operation key (the caller's idempotency key of an edit or delete)
MAX_ID_CHARS = 128  # user ids (author, user) and channel names


class MessageState(msgspec.Struct, frozen=True, kw_only=True):
    """The current state of message ``offset`` of ``channel``."""

    channel: str
    offset: int  # the message's offset in its channel log (>= 1)
    author: str  # who posted it
    version: int = 1  # 1 as posted; +1 per edit and for the delete
    body: str | None = None  # the current body once edited (None: as posted; "" deleted)
    deleted: bool = False
    edited_ms: int = 0  # last edit or delete time
    reactions: dict[str, int] = {}  # emoji -> count of users, only counts > 0
    replies: int = 0  # thread replies (the thread log's head offset)
    last_reply_ms: int = 0
    participants: tuple[str, ...] = ()  # distinct repliers, first-reply order, <= 20
    op: str = ""  # key of the last edit/delete applied (a retry of it is recognised)


class MessageStateStatistics(msgspec.Struct):
    reads: int = 0  # get_states and my_reactions calls
    writes: int = 0  # calls of changing methods that returned (no-op toggles too)
    refusals: int = 0  # calls refused by a stored-state check (not input validation)


# -- validation (pure) ---------------------------------------------------------------------

_SHORT_NAME = re.compile(r":[a-z0-9_+-]{1,62}:")
_ZWJ = "\u200d"
_VARIATION = frozenset("\ufe0f\ufe0e")
_KEYCAP = "\u20e3"
_KEYCAP_BASES = frozenset("0123456789#*")
_KEYCAP_BASES_VS = frozenset(b + "\ufe0f" for b in _KEYCAP_BASES)  # "1\ufe0f" before U+20E3
_BLACK_FLAG = "\U0001f3f4"  # the base of tag sequences (subdivision flags)
_TAGS = range(0xE0020, 0xE0080)  # tag characters, U+E007F ends a tag sequence


def _is_emoji_symbol(ch: str) -> bool:
    # Symbol categories, outside ASCII ("^" and "`" are Sk). Covers the pictographs, the
    # skin-tone modifiers U+1F3FB..U+1F3FF (Sk) and the regional indicators (So).
    return ord(ch) > 0x7F and unicodedata.category(ch) in ("So", "Sk")


def check_emoji(s: str) -> str:
    """``s`` if it is a reaction emoji, else :class:`InvalidField` (field ``emoji``).

    1..:data:`MAX_EMOJI_CHARS` characters, either a ``:short_name:`` (lower-case ASCII
    letters, digits, ``_+-``) or emoji code points only: non-ASCII symbols (categories
    ``So``/``Sk``: pictographs, skin-tone modifiers, regional indicators), joined by ZWJ
    (U+200D), with variation selectors (U+FE0E/U+FE0F), keycaps (``0-9#*``, optionally
    U+FE0F, then U+20E3) and tag sequences after a black flag (subdivision flags). At
    least one symbol or keycap. Not normalised: ``❤`` and ``❤️`` are different keys.
    """
    if not isinstance(s, str) or not 1 <= len(s) <= MAX_EMOJI_CHARS:
        raise InvalidField(f"emoji must be 1..{MAX_EMOJI_CHARS} characters", field="emoji")
    if s.startswith(":"):
        if _SHORT_NAME.fullmatch(s):
            return s
        raise InvalidField(f"not a :short_name: emoji: {s!r}", field="emoji")
    symbols = 0
    in_tags = False
    for i, ch in enumerate(s):
        if _is_emoji_symbol(ch):
            symbols += 1
            in_tags = ch == _BLACK_FLAG
        elif ch in _KEYCAP_BASES:
            rest = s[i + 1 : i + 3]
            if not (rest.startswith(_KEYCAP) or rest == "\ufe0f" + _KEYCAP):
                raise InvalidField(f"not an emoji: {s!r}", field="emoji")
            symbols += 1
            in_tags = False
        elif ch == _KEYCAP:
            before = s[max(0, i - 2) : i]
            if not before or not (before[-1] in _KEYCAP_BASES or before in _KEYCAP_BASES_VS):
                raise InvalidField(f"not an emoji: {s!r}", field="emoji")
        elif ch == _ZWJ or ch in _VARIATION:
            in_tags = False
        elif ord(ch) in _TAGS and in_tags:
            pass
        else:
            raise InvalidField(f"not an emoji: {s!r}", field="emoji")
    if not symbols:
        raise InvalidField(f"not an emoji: {s!r}", field="emoji")
    return s


def check_body(body: str) -> str:
    """``body`` if it is 1..:data:`MAX_BODY_BYTES` UTF-8 bytes, else ``InvalidField``
    (field ``body``). An empty body is refused: deleting is :meth:`delete`."""
    if not isinstance(body, str) or not body:
        raise InvalidField("body must not be empty", field="body")
    try:
        size = len(body.encode())
    except UnicodeEncodeError:  # lone surrogates
        raise InvalidField("body is not valid UTF-8 text", field="body") from None
    if size > MAX_BODY_BYTES:
        raise InvalidField(f"body over {MAX_BODY_BYTES} bytes", field="body")
    return body


def check_offset(offset: int, field: str = "offset") -> int:
    """``offset`` if it is an ``int`` >= 1, else ``InvalidField`` (field ``field``)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 1:
        raise InvalidField(f"{field} must be an integer >= 1, not {offset!r}", field=field)
    return offset


def check_id(value: str, field: str) -> str:
    """A channel or user id: 1..:data:`MAX_ID_CHARS` characters, no control characters."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_ID_CHARS
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise InvalidField(f"{field} must be 1..{MAX_ID_CHARS} printable characters", field=field)
    return value


def check_op(op: str) -> str:
    """An operation key: 1..:data:`MAX_OP_CHARS` characters (``""`` is "no op yet")."""
    if not isinstance(op, str) or not 1 <= len(op) <= MAX_OP_CHARS:
        raise InvalidField(f"op must be 1..{MAX_OP_CHARS} characters", field="op")
    return op


# -- the store -----------------------------------------------------------------------------


class MessageStateStore(Protocol):
    """Current state of messages (edits, deletes, reactions, thread summaries).

    Guarantees every adapter gives:

    * **Atomic per call, strongly consistent.** Each method makes all of its changes or
      none; reads see every write that returned. On a backend failure it raises
      :class:`gateway.errors.StoreUnavailable` (retryable) and nothing of the call is
      stored.
    * **A row appears on the first change.** ``edit``/``delete``/``react``/``note_reply``
      create the row (version 1, as posted) if absent; ``author`` (the record's sender,
      passed by the caller) must match a stored row's author, else
      :class:`~gateway.domain.errors.Conflict` (reason ``"author"``).
    * **Versions** count edits and the delete only (reactions and replies leave
      ``version`` alone, so they never make an edit stale).
    * **Retries are recognised.** An ``edit`` whose ``op`` is the stored ``op`` (the last
      applied edit or delete) returns the stored state unchanged; ``delete`` of a deleted
      message, a repeated add or remove of a reaction and a repeated ``note_reply`` write
      nothing. Only the *last* op is remembered: a retry of an older edit after a newer
      one is refused as stale.
    * **Deleted messages** are tombstones: ``deleted``, ``body == ""``, no reactions;
      ``edit`` and ``react`` raise ``Conflict`` (reason ``"deleted"``); ``note_reply``
      still counts replies.
    * **Validation** before any I/O: ids (:func:`check_id`), offsets >= 1, ``op``
      (:func:`check_op`), ``body`` (:func:`check_body`), ``emoji`` (:func:`check_emoji`)
      raise :class:`~gateway.domain.errors.InvalidField` with ``field``.
    """

    async def get_states(self, channel: str, offsets: Sequence[int]) -> dict[int, MessageState]:
        """The states of those of ``offsets`` that have a row (messages never changed have
        none). At most :data:`MAX_GET_STATES` offsets (else ``InvalidField``, field
        ``offsets``). DynamoDB: one ``BatchGetItem`` (``ConsistentRead``)."""
        ...

    async def edit(
        self,
        channel: str,
        offset: int,
        *,
        author: str,
        expected_version: int,
        body: str,
        op: str,
        now_ms: int,
    ) -> MessageState:
        """Replace the body. Stored ``op == op``: the stored state (a retry). Deleted:
        ``Conflict`` (``"deleted"``). ``version != expected_version`` (an absent row is
        version 1): ``StaleVersion`` with ``current``. Else ``version + 1``, ``body``,
        ``edited_ms = now_ms``, ``op``. DynamoDB: one conditional ``UpdateItem``
        (``ReturnValuesOnConditionCheckFailure=ALL_OLD`` tells which check failed)."""
        ...

    async def delete(
        self, channel: str, offset: int, *, author: str, op: str, now_ms: int
    ) -> tuple[bool, MessageState]:
        """Tombstone: ``deleted``, ``body = ""``, ``version + 1``, reactions cleared (the
        per-user reaction rows too), ``edited_ms = now_ms``, ``op``. ``(True, state)`` if
        this call deleted, ``(False, state)`` if it already was deleted (nothing written).
        DynamoDB: one conditional ``UpdateItem``; the per-user reaction items are then
        swept (``Query`` + ``BatchWriteItem``, see ``docs/data-model.md``)."""
        ...

    async def react(
        self,
        channel: str,
        offset: int,
        *,
        author: str,
        user: str,
        emoji: str,
        add: bool,
        max_kinds: int,
    ) -> tuple[bool, MessageState]:
        """Add (``add``) or remove ``user``'s ``emoji`` reaction. At most one per (message,
        emoji, user): adding a present one or removing an absent one returns
        ``(False, state)`` and writes nothing; else the count moves by one (the emoji is
        dropped at 0) and ``(True, state)``. Adding an emoji not yet on the message when
        it has ``max_kinds`` (>= 1) distinct ones: ``LimitExceeded`` (reason
        ``"reactions"``). Deleted: ``Conflict`` (``"deleted"``). DynamoDB: one
        ``TransactWriteItems``: the reaction item (``attribute_not_exists`` /
        ``attribute_exists``) and the state item (count, not deleted, kinds limit)."""
        ...

    async def my_reactions(self, channel: str, offset: int, user: str) -> frozenset[str]:
        """The emoji ``user`` has on the message (empty once it is deleted). DynamoDB: one
        ``Query`` on the reaction items' key prefix ``<offset>#<user>``."""
        ...

    async def note_reply(
        self,
        channel: str,
        parent: int,
        *,
        author: str,
        user: str,
        reply_offset: int,
        reply_ms: int,
    ) -> MessageState:
        """Count a thread reply on message ``parent``: ``replies = max(replies,
        reply_offset)``, ``last_reply_ms = max(last_reply_ms, reply_ms)``, ``user``
        appended to ``participants`` if absent and fewer than :data:`MAX_PARTICIPANTS`.
        Idempotent (a repeat writes nothing); deleted parents count too. DynamoDB:
        ``GetItem``, then one ``UpdateItem`` conditioned on the stored counters not being
        above the new ones (and, when appending a participant, the user being absent with
        room left); on a failed condition it re-decides from the returned item."""
        ...

    def statistics(self) -> MessageStateStatistics: ...

    async def aclose(self) -> None: ...
