"""``python -m signalling`` as deployed: X-Forwarded-For from a local client, SIGTERM drain, blank settings.

The service runs as a subprocess (uvicorn, real sockets on 127.0.0.1); a local stand-in for the LiveKit server
API answers the admin endpoint slowly, so a request is in flight when SIGTERM arrives.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
KEY = "process-test-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def slow_livekit_api() -> AsyncIterator[str]:
    """The LiveKit server API's ListRooms, answering after 2 s."""

    async def list_rooms(request: web.Request) -> web.Response:
        await asyncio.sleep(2.0)
        return web.Response(body=b"", content_type="application/protobuf")  # an empty ListRoomsResponse

    app = web.Application()
    app.router.add_post("/twirp/livekit.RoomService/ListRooms", list_rooms)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _start(tmp_path: Path, api_url: str, **env: str) -> tuple[asyncio.subprocess.Process, str, Path]:
    port = _free_port()
    log = tmp_path / "service.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "TOKEN_", "WEB_"))}
    environ.update(
        PYTHONPATH=str(ROOT),
        LIVEKIT_URL="",  # blank, as in .env.example: the default applies (it used to refuse to start)
        WEB_STATIC_DIR="",
        LIVEKIT_API_URL=api_url,
        TOKEN_SERVICE_API_KEYS=KEY,
        TOKEN_DRAIN_TIMEOUT_S="6",
    )
    environ.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "signalling",
        "--open",
        "--port",
        str(port),
        cwd=tmp_path,  # no .env here
        env=environ,
        stdout=log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the token service did not start:\n{log.read_text()}")
            try:
                async with http.get(base + "/readyz") as res:
                    if res.status == 200:
                        return proc, base, log
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_x_forwarded_for_from_a_local_client_gets_no_new_bucket(
    tmp_path: Path, slow_livekit_api: str
) -> None:
    proc, base, _ = await _start(tmp_path, slow_livekit_api, TOKEN_RATE_LIMIT_BURST="3")
    try:
        async with aiohttp.ClientSession() as http:
            codes = []
            for i in range(6):
                headers = {"X-Forwarded-For": f"198.51.100.{i}"}
                async with http.post(base + "/api/token", json={"room": "r"}, headers=headers) as res:
                    codes.append(res.status)
                    body = await res.json()
            assert codes == [200, 200, 200, 429, 429, 429]
            assert body["error"]["code"] == "rate_limited"
    finally:
        await _stop(proc)


async def test_sigterm_drains_in_flight_requests_and_exits_cleanly(
    tmp_path: Path, slow_livekit_api: str
) -> None:
    proc, base, log = await _start(tmp_path, slow_livekit_api)
    try:
        async with aiohttp.ClientSession() as http:

            async def slow_admin_call() -> tuple[int, object]:
                async with http.get(base + "/api/admin/rooms", headers={"X-API-Key": KEY}) as res:
                    return res.status, await res.json()

            in_flight = asyncio.create_task(slow_admin_call())
            await asyncio.sleep(0.5)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            async with http.get(base + "/readyz") as res:
                assert res.status == 503 and (await res.json())["error"]["code"] == "shutting_down"
            async with http.get(base + "/healthz") as res:
                assert res.status == 200
            async with http.post(base + "/api/token", json={"room": "r"}) as res:
                assert res.status == 503 and (await res.json())["error"]["code"] == "shutting_down"
            assert await asyncio.wait_for(in_flight, 10) == (200, [])
        assert await asyncio.wait_for(proc.wait(), 10) == 0, log.read_text()
        assert time.monotonic() - sent < 6, "exited only at the drain timeout although nothing was in flight"
        assert "drained" in log.read_text()
    finally:
        await _stop(proc)


async def test_drain_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await release.wait()  # answers only when the test is over
        return web.Response(body=b"", content_type="application/protobuf")

    app = web.Application()
    app.router.add_post("/twirp/livekit.RoomService/ListRooms", never)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    api_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", api_port).start()
    proc, base, log = await _start(tmp_path, f"http://127.0.0.1:{api_port}", TOKEN_DRAIN_TIMEOUT_S="1")
    try:
        async with aiohttp.ClientSession() as http:
            stuck = asyncio.create_task(http.get(base + "/api/admin/rooms", headers={"X-API-Key": KEY}))
            await asyncio.sleep(0.5)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 10) == 0, log.read_text()
            assert time.monotonic() - sent < 5
            stuck.cancel()
        assert "drain timeout" in log.read_text()
    finally:
        await _stop(proc)
        release.set()
        await runner.cleanup()
