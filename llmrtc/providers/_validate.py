"""Is a successful answer what was asked for? One check shared by every provider.

A "200 OK" is not data by itself: a proxy's or captive portal's HTML page, a JSON error object, or audio
bytes that are really a text document must never become the user's words, the model's answer or speech.
Each provider states what it expects (``json``, ``sse``, ``ndjson``, ``audio`` or ``text``) and hands the
``Content-Type`` and the first bytes here; a mismatch is a :class:`ProviderResponseError` (retryable: such
pages are usually a passing gateway fault) with a safe message, and the details go to the log.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any, Literal

from llmrtc.errors import ProviderError, ProviderResponseError
from llmrtc.providers._errors import error_from_payload

log = logging.getLogger("llmrtc.providers.validate")

Expect = Literal["json", "sse", "ndjson", "audio", "text"]

_TEXTUAL = ("text/", "json", "xml", "html", "javascript")
_NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
#: How many leading bytes of an audio body are looked at before it is passed on.
SNIFF_BYTES = 64


def media_type(content_type: str | None) -> str:
    """``"text/html"`` for ``"text/html; charset=utf-8"``; ``""`` when there is none."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def accepts(content_type: str | None, expect: Expect) -> bool:
    """Whether an answer declared as ``content_type`` may be ``expect`` (an undeclared one may)."""
    return _accepts(media_type(content_type), expect)


def unexpected_body(provider: str, body: bytes, content_type: str | None, expect: Expect) -> ProviderError:
    """The error for a whole answer of the wrong kind: a JSON error object becomes its typed error, anything
    else a :class:`ProviderResponseError`."""
    payload = _json_error(body)
    if payload is not None:
        return error_from_payload(provider, payload)
    title = _TITLE.search(body)
    detail = (title.group(1) if title else body[:200]).decode("utf-8", "replace").strip()
    return wrong_answer(provider, _WHAT[expect], detail=f"{media_type(content_type)}: {detail}")


def _accepts(media: str, expect: Expect) -> bool:
    if not media:
        return True  # no type declared: the body checks decide
    if "html" in media:
        return False
    is_json = media.endswith("json") or media.endswith("+json")
    if expect == "json":
        return is_json
    if expect == "sse":
        return media == "text/event-stream"
    if expect == "ndjson":
        return is_json or media in _NDJSON
    if expect == "text":
        return media.startswith("text/") and "xml" not in media
    return not any(mark in media for mark in _TEXTUAL)  # audio: anything but a text document


def wrong_answer(
    provider: str, what: str, *, retryable: bool = True, detail: str = ""
) -> ProviderResponseError:
    """The :class:`ProviderResponseError` for an answer that is not what was asked for (logged with ``detail``)."""
    log.warning(
        "provider answered something else than %s", what, extra={"provider": provider, "detail": detail[:300]}
    )
    return ProviderResponseError(f"the answer is not {what}", provider=provider, retryable=retryable)


def check_content_type(provider: str, content_type: str | None, expect: Expect, *, head: bytes = b"") -> None:
    """Raise :class:`ProviderResponseError` when an answer declared as ``content_type`` cannot be ``expect``.

    ``head`` (the body's first bytes, when known) goes to the log, an HTML page's ``<title>`` first.
    """
    media = media_type(content_type)
    if _accepts(media, expect):
        return
    title = _TITLE.search(head)
    detail = (title.group(1) if title else head[:200]).decode("utf-8", "replace").strip()
    raise wrong_answer(provider, _WHAT[expect], detail=f"{media}: {detail}")


_WHAT: dict[Expect, str] = {
    "json": "JSON",
    "sse": "an event stream",
    "ndjson": "newline-delimited JSON",
    "audio": "audio",
    "text": "text",
}


def looks_like_a_document(head: bytes) -> bool:
    """True when the first bytes of a body meant to be audio are an HTML/XML page or a JSON document.

    Audio (raw PCM included) is never a run of :data:`SNIFF_BYTES` printable ASCII bytes opening with ``<``,
    ``{`` or ``[``; a document is.
    """
    text = head.lstrip()
    if not text or text[:1] not in (b"<", b"{", b"["):
        return False
    return all(32 <= b < 127 or b in (9, 10, 13) for b in text[:SNIFF_BYTES])


def check_audio_head(provider: str, head: bytes, content_type: str | None = None) -> None:
    """Raise :class:`ProviderResponseError` when an audio answer's first bytes are a page or a JSON error
    (a JSON error object becomes its typed error)."""
    if not looks_like_a_document(head):
        return
    payload = _json_error(head)
    if payload is not None:
        raise error_from_payload(provider, payload)
    raise wrong_answer(provider, "audio", detail=f"{media_type(content_type)}: {head[:200]!r}")


async def checked_audio(
    provider: str, body: AsyncIterable[bytes], content_type: str | None
) -> AsyncIterator[bytes]:
    """``body`` passed on once its ``content_type`` and first :data:`SNIFF_BYTES` bytes look like audio."""
    check_content_type(provider, content_type, "audio")
    head = b""
    checked = False
    try:
        async for piece in body:
            if checked:
                yield piece
                continue
            head += piece
            if len(head) >= SNIFF_BYTES:
                check_audio_head(provider, head, content_type)
                checked = True
                yield head
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    if not checked:
        check_audio_head(provider, head, content_type)
        if head:
            yield head


def _json_error(data: bytes | str) -> object | None:
    """The ``error`` of a JSON error object (``{"error": ...}`` / ``{"detail": ...}``), else ``None``."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, dict):
        for key in ("error", "detail"):
            if value.get(key):
                inner = value[key]
                return inner if isinstance(inner, dict) else {"message": str(inner)}
    return None


def json_body(provider: str, body: bytes | str, content_type: str | None = None) -> Any:
    """The parsed JSON of a successful answer; wrong content types and unparseable bodies raise
    :class:`ProviderResponseError` (retryable)."""
    raw = body.encode() if isinstance(body, str) else body
    check_content_type(provider, content_type, "json", head=raw[: SNIFF_BYTES * 8])
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise wrong_answer(provider, "JSON", detail=f"{exc}: {raw[:200]!r}") from exc


def json_object(
    provider: str,
    body: bytes | str,
    content_type: str | None = None,
    *,
    required: Mapping[str, type] | None = None,
) -> dict[str, Any]:
    """A JSON object answer with the ``required`` fields of the given types.

    An ``{"error": {...}}`` object is the vendor's typed error; a missing or mistyped field is a
    non-retryable :class:`ProviderResponseError` (the server speaks another API).
    """
    data = json_body(provider, body, content_type)
    if not isinstance(data, dict):
        raise wrong_answer(provider, "a JSON object", retryable=False, detail=type(data).__name__)
    check_shape(provider, data, required or {})
    return data


def check_shape(provider: str, data: Mapping[str, Any], required: Mapping[str, type]) -> None:
    """Raise when ``data`` is an error object or lacks one of the ``required`` fields (of that type)."""
    error = data.get("error")
    if error and not all(key in data for key in required):
        raise error_from_payload(provider, error if isinstance(error, dict) else {"message": str(error)})
    for key, kind in required.items():
        if not isinstance(data.get(key), kind):
            raise wrong_answer(
                provider, f"the expected answer (no {key!r})", retryable=False, detail=str(list(data))[:200]
            )


def reraise_as_response_error(provider: str, exc: BaseException, what: str) -> ProviderError:
    """A :class:`ProviderResponseError` for a client library that failed to parse an answer as ``what``."""
    if isinstance(exc, ProviderError):
        return exc
    return wrong_answer(provider, what, detail=f"{type(exc).__name__}: {exc}")


__all__ = [
    "SNIFF_BYTES",
    "accepts",
    "check_audio_head",
    "check_content_type",
    "check_shape",
    "checked_audio",
    "json_body",
    "json_object",
    "looks_like_a_document",
    "media_type",
    "reraise_as_response_error",
    "unexpected_body",
    "wrong_answer",
]
