"""The chat domain: records (``model``), rules (``rules``) and refusals (``errors``).

Pure: no I/O, no trio. Stores (``gateway.store.domain``) persist these records and apply
these rules atomically; routes use the rules to filter what a caller sees.
"""

from gateway.domain.errors import (
    AlreadyExists,
    BadCursor,
    Conflict,
    DomainError,
    Forbidden,
    InvalidField,
    LimitExceeded,
    NotFound,
    StaleVersion,
)
from gateway.domain.model import (
    MAX_DM_PARTICIPANTS,
    Channel,
    ChannelKind,
    ChannelMember,
    Conversation,
    Member,
    Role,
    User,
    Workspace,
)

__all__ = [
    "MAX_DM_PARTICIPANTS",
    "AlreadyExists",
    "BadCursor",
    "Channel",
    "ChannelKind",
    "ChannelMember",
    "Conflict",
    "Conversation",
    "DomainError",
    "Forbidden",
    "InvalidField",
    "LimitExceeded",
    "Member",
    "NotFound",
    "Role",
    "StaleVersion",
    "User",
    "Workspace",
]
