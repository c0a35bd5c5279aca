"""Mentions in message bodies: ``@user`` and ``@channel`` / ``@here`` / ``@everyone``."""

from __future__ import annotations

import re

__all__ = ["EVERYONE", "MAX_MENTIONS", "parse_mentions"]

MAX_MENTIONS = 32  # distinct users one message can mention (more are ignored)
EVERYONE = frozenset({"channel", "here", "everyone"})
_MENTION = re.compile(r"(?<![\w@.])@([A-Za-z0-9][A-Za-z0-9._-]{0,63})")


def parse_mentions(body: str) -> tuple[tuple[str, ...], bool]:
    """The distinct users ``body`` mentions (in order, at most :data:`MAX_MENTIONS`) and
    whether it mentions everyone in the channel. A trailing ``.`` is not part of a name
    (``thanks @bob.`` mentions ``bob``); an e-mail address is not a mention."""
    users: dict[str, None] = {}
    everyone = False
    for match in _MENTION.finditer(body):
        name = match.group(1).rstrip(".")
        if name in EVERYONE:
            everyone = True
        elif len(users) < MAX_MENTIONS:
            users.setdefault(name, None)
    return tuple(users), everyone
