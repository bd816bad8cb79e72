"""Pictures for vision tests: a solid colour with a large word (Pillow), published as a real video track.

``picture()`` draws the image; :class:`PictureTrack` is a local ``rtc`` video track that shows it (camera or
screen share) at a steady frame rate and can be published with :meth:`PictureTrack.publish`;
``dominant_color()`` reads back what an encoded frame mostly shows; ``openai_images()`` takes the images out of
a request a fake OpenAI-compatible LLM received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections.abc import AsyncIterator

import numpy as np
from livekit import rtc
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
RED: RGB = (220, 30, 30)
GREEN: RGB = (30, 180, 60)
BLUE: RGB = (30, 60, 220)


def picture(color: RGB, word: str, width: int = 640, height: int = 480) -> Image.Image:
    """A ``width`` x ``height`` RGB image of ``color`` with ``word`` written large in white in the middle."""
    image = Image.new("RGB", (width, height), color)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(12, height // 5))
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    at = ((width - (right - left)) // 2 - left, (height - (bottom - top)) // 2 - top)
    draw.text(at, word, fill=(255, 255, 255), font=font)
    return image


def to_frame(image: Image.Image) -> rtc.VideoFrame:
    """An RGBA ``rtc.VideoFrame`` of ``image``."""
    rgba = image.convert("RGBA")
    return rtc.VideoFrame(rgba.width, rgba.height, rtc.VideoBufferType.RGBA, bytearray(rgba.tobytes()))


def dominant_color(encoded: bytes) -> RGB:
    """The most common colour of an encoded image (each channel rounded to 16 levels, then the mean of
    the pixels in that bucket), and so the background of a :func:`picture`."""
    pixels = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB")).reshape(-1, 3).astype(np.int32)
    buckets = pixels // 16
    keys = buckets[:, 0] * 256 + buckets[:, 1] * 16 + buckets[:, 2]
    top = np.bincount(keys).argmax()
    mean = pixels[keys == top].mean(axis=0)
    return (int(mean[0]), int(mean[1]), int(mean[2]))


def close_to(a: RGB, b: RGB, tolerance: int = 24) -> bool:
    """Whether colours ``a`` and ``b`` differ by at most ``tolerance`` in each channel (VP8 and JPEG drift)."""
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def openai_images(messages: list[dict[str, object]]) -> list[bytes]:
    """The images of an OpenAI chat-completions request's ``messages`` (``image_url`` data-URL parts), in
    order: what a fake OpenAI-compatible LLM received."""
    out: list[bytes] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = str(part["image_url"]["url"])
                out.append(base64.b64decode(url.split(",", 1)[1]))
    return out


def image_size(encoded: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(encoded)) as image:
        return image.size


class PictureTrack:
    """A local video track showing a picture at ``fps`` frames a second (change it with :meth:`show`)."""

    def __init__(
        self,
        image: Image.Image,
        *,
        name: str = "camera",
        fps: float = 15.0,
        source: int = rtc.TrackSource.SOURCE_CAMERA,
    ) -> None:
        self.source_kind = source
        self.width, self.height = image.size
        self.video = rtc.VideoSource(
            self.width, self.height, is_screencast=source == rtc.TrackSource.SOURCE_SCREENSHARE
        )
        self.track = rtc.LocalVideoTrack.create_video_track(name, self.video)
        self.fps = fps
        self.frames = 0
        self._frame = to_frame(image)
        self._task = asyncio.create_task(self._feed())

    def show(self, image: Image.Image) -> None:
        """Show ``image`` (same size) from the next frame on."""
        self._frame = to_frame(image)

    async def _feed(self) -> None:
        while True:
            self.video.capture_frame(self._frame)
            self.frames += 1
            await asyncio.sleep(1 / self.fps)

    async def publish(self, room: rtc.Room, *, simulcast: bool = False) -> rtc.LocalTrackPublication:
        """Publish as VP8 (one layer by default: the development server does not negotiate simulcast)."""
        options = rtc.TrackPublishOptions(
            source=self.source_kind,  # type: ignore[arg-type]
            video_codec=rtc.VideoCodec.VP8,
            simulcast=simulcast,
        )
        return await room.local_participant.publish_track(self.track, options)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.video.aclose()


@contextlib.asynccontextmanager
async def picture_track(
    image: Image.Image, *, room: rtc.Room | None = None, screen: bool = False, fps: float = 15.0
) -> AsyncIterator[PictureTrack]:
    """A :class:`PictureTrack` (a screen share when ``screen``), published in ``room`` when given."""
    source = rtc.TrackSource.SOURCE_SCREENSHARE if screen else rtc.TrackSource.SOURCE_CAMERA
    track = PictureTrack(image, name="screen" if screen else "camera", fps=fps, source=source)
    publication = None
    try:
        if room is not None:
            publication = await track.publish(room)
        yield track
    finally:
        if room is not None and publication is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.local_participant.unpublish_track(publication.sid), 5)
        await track.aclose()
