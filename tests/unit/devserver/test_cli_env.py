"""The development server's command line treats blank environment values as unset (like the token service)."""

from __future__ import annotations

import pytest

from llmrtc.errors import ConfigError
from signalling.devserver.__main__ import build_parser, resolve


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_livekit_keys_is_unset(blank: str) -> None:
    settings = resolve(build_parser().parse_args(["--dev"]), env={"LIVEKIT_KEYS": blank})
    assert (settings.api_key, settings.api_secret) == ("devkey", "secret")
    with pytest.raises(ConfigError, match="no API key"):
        resolve(build_parser().parse_args([]), env={"LIVEKIT_KEYS": blank})
