"""The Feldera emulator in process, and an HTTP session to it, for the emulator's own tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from feldera_sandbox.feldera_emulator import FelderaEmulator

from .feldera_http import Call, make_call


@pytest.fixture
async def emulator() -> AsyncIterator[FelderaEmulator]:
    """The open-source edition with its defaults (a module overrides it for other settings)."""
    emu = FelderaEmulator()
    yield emu
    await emu.stop()


@pytest.fixture
async def session(emulator: FelderaEmulator) -> AsyncIterator[aiohttp.ClientSession]:
    url = await emulator.start()
    async with aiohttp.ClientSession(url) as s:
        yield s


@pytest.fixture
def call(session: aiohttp.ClientSession) -> Call:
    """(status, parsed body) of one request; an empty body reads as None, non-JSON as text."""
    return make_call(session)
