"""Data packets: parse what a participant sent, stamp the sender, choose the channel to forward on."""

from __future__ import annotations

import logging

from google.protobuf.message import DecodeError
from livekit.protocol import models

from llmrtc.errors import ProtocolError

logger = logging.getLogger(__name__)

RELIABLE_LABEL = "_reliable"
LOSSY_LABEL = "_lossy"
DATA_LABELS = (RELIABLE_LABEL, LOSSY_LABEL)
MAX_PACKET_BYTES = 64 * 1024


class DataPacketError(ProtocolError):
    """A data-channel message that is not a valid LiveKit ``DataPacket``."""


def parse_packet(raw: bytes | str, label: str) -> models.DataPacket:
    """Decode a ``DataPacket`` received on channel ``label``; its kind follows the channel."""
    if isinstance(raw, str):
        raise DataPacketError(f"text message on {label}: DataPackets are binary", code="invalid_data")
    if len(raw) > MAX_PACKET_BYTES:
        raise DataPacketError(f"data packet of {len(raw)} bytes exceeds {MAX_PACKET_BYTES}", code="too_large")
    packet = models.DataPacket()
    try:
        packet.ParseFromString(raw)
    except DecodeError as exc:
        raise DataPacketError(f"undecodable data packet on {label}: {exc}", code="invalid_data") from exc
    packet.kind = models.DataPacket.Kind.LOSSY if label == LOSSY_LABEL else models.DataPacket.Kind.RELIABLE
    return packet


def stamp_sender(packet: models.DataPacket, identity: str, sid: str) -> None:
    """Set the sender fields from the server's knowledge of the participant (never trust the client)."""
    packet.participant_identity = identity
    packet.participant_sid = sid
    if packet.HasField("user"):
        packet.user.participant_identity = identity
        packet.user.participant_sid = sid


def prepare_for_forwarding(
    packet: models.DataPacket, *, identity: str, sid: str, is_agent: bool, hidden: bool
) -> str | None:
    """Apply livekit-server's rules to a packet a participant sent; returns why it is dropped, or None.

    - legacy ``Transcription`` packets are forwarded from agents only (anyone else could put words in
      another participant's mouth); ``Metrics`` packets are never forwarded to participants;
    - the sender is stamped from the server's knowledge; a hidden sender's identity is blanked;
    - an agent may send chat messages and text-stream headers on behalf of another participant (its
      transcriptions of what they said): those keep the identity the agent set and are marked generated.
    """
    which = packet.WhichOneof("value")
    if which == "transcription" and not is_agent:
        return "transcription packets are accepted from agents only"
    if which == "metrics":
        return "metrics packets are not forwarded"
    on_behalf = (
        is_agent
        and packet.participant_identity not in ("", identity)
        and (
            which == "chat_message"
            or (
                which == "stream_header"
                and packet.stream_header.WhichOneof("content_header") == "text_header"
            )
        )
    )
    if on_behalf:
        if which == "chat_message":
            packet.chat_message.generated = True
        else:
            packet.stream_header.text_header.generated = True
        return None
    if hidden:
        stamp_sender(packet, "", "")
    else:
        stamp_sender(packet, identity, sid)
    return None


def label_for(packet: models.DataPacket) -> str:
    """The channel label a packet travels on."""
    return LOSSY_LABEL if packet.kind == models.DataPacket.Kind.LOSSY else RELIABLE_LABEL
