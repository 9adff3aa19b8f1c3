"""Redis Cluster's hash slot of a key: CRC16 (XMODEM) of its hash tag, mod 16384.

The fleet groups breakers by slot so that one script call never names keys of
two slots; coredis has the same function, but not in its public API.
"""

from __future__ import annotations

__all__ = ["SLOTS", "hash_slot"]

SLOTS = 16384


def _table() -> list[int]:
    table: list[int] = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _table()


def hash_slot(key: str) -> int:
    """The slot of ``key``: only its hash tag counts, if it has a non-empty one."""
    data = key.encode()
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ byte]
    return crc % SLOTS
