"""What a forked child inherits but must never use or finalise."""

from __future__ import annotations

# Objects inherited across fork() that must never be finalised in the child: a "running"
# loop whose thread does not exist there cannot be closed, a session's connections are the
# parent's, and either would warn or misbehave when collected.
FORK_GRAVEYARD: list[object] = []
