"""TCP stream helpers shared by the protocol drivers: open with a timeout as a typed error, close quietly."""

from __future__ import annotations

import asyncio
import ssl as ssl_module

from devices.base import DeviceUnavailable


async def open_stream(host: str, port: int, timeout_s: float, label: str, limit: int = 2**16, *,
                      ssl: ssl_module.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect within ``timeout_s`` (and complete the TLS handshake with ``ssl``); a refusal, a timeout or a
    failed handshake (the server's certificate does not verify, or it refused ours) is DeviceUnavailable."""
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port, limit=limit, ssl=ssl), timeout_s)
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        raise DeviceUnavailable(f"{label}: cannot connect: {exc or type(exc).__name__}") from exc


async def close_stream(writer: asyncio.StreamWriter | None) -> None:
    """Close and wait briefly; a peer that is already gone leaves nothing to release."""
    if writer is None:
        return
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, TimeoutError):
        pass
