"""Floor policy: which human's utterance gets an agent turn, and who may interrupt the agent.

- ``everyone``: every utterance gets a turn; anyone may barge in.
- ``name``: only utterances that address the agent by name (or a wake word) get a turn; anyone may barge in
  (a false interruption resumes the answer).
- ``designated``: only the participant whose attribute ``FLOOR_ATTRIBUTE`` is ``"true"`` gets turns and may
  barge in; others are not transcribed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.config import FloorPolicy
from worker.room import ParticipantInfo

_TRUE = {"true", "1", "yes", "on"}


@dataclass(frozen=True, slots=True)
class Floor:
    policy: FloorPolicy = "everyone"
    attribute: str = "llmrtc.floor"
    names: tuple[str, ...] = ()

    def is_designated(self, participant: ParticipantInfo) -> bool:
        return participant.attributes.get(self.attribute, "").strip().lower() in _TRUE

    def listens_to(self, participant: ParticipantInfo) -> bool:
        """Whether this participant's speech is transcribed at all."""
        return self.policy != "designated" or self.is_designated(participant)

    def may_interrupt(self, participant: ParticipantInfo) -> bool:
        return self.policy != "designated" or self.is_designated(participant)

    def takes_floor(self, participant: ParticipantInfo, text: str) -> bool:
        """Whether ``text`` said (or typed) by ``participant`` gets an agent turn."""
        if self.policy == "everyone":
            return True
        if self.policy == "designated":
            return self.is_designated(participant)
        return self.addresses_agent(text)

    def addresses_agent(self, text: str) -> bool:
        lowered = text.lower()
        return any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", lowered) for name in self.names if name)


__all__ = ["Floor"]
