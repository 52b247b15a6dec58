"""Fixtures of the end-to-end tests: a real Samba server and an analyst speaking SMB to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.samba import SambaServer, SmbClient, samba_server


@pytest.fixture
def samba(tmp_path: Path) -> Iterator[SambaServer]:
    """smbd exporting ``tmp_path/share`` (the daemon's share root) on a loopback port."""
    with samba_server(tmp_path / "share") as server:
        yield server


@pytest.fixture
def analyst(samba: SambaServer) -> Iterator[SmbClient]:
    """The analyst's Windows machine, logged on to the share with a password."""
    with SmbClient(samba) as client:
        yield client
