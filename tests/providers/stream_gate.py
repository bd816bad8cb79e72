"""A gate in a test's audio or text source: proof that a streamed result came before the input ended."""

from __future__ import annotations

import asyncio


class Gate:
    """Holds the audio at ``at_piece`` until a result opens it: proof that the result came before the audio
    ended (``opened_by_result``), whatever the machine's load."""

    def __init__(self, at_piece: int) -> None:
        self.at_piece = at_piece
        self.event = asyncio.Event()
        self.opened_by_result: bool | None = None

    async def wait(self) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), 10)
            self.opened_by_result = True
        except TimeoutError:
            self.opened_by_result = False
