"""Scalars to TensorBoard: `torch.utils.tensorboard` when the tensorboard package is installed, otherwise a
minimal writer of the same event files (TFRecord framing, masked CRC-32C, hand-encoded `Event` protobufs),
so `--tensorboard` works without installing anything. Only scalars are written."""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any, Protocol


class ScalarWriter(Protocol):
    def add_scalar(self, tag: str, value: float, step: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord files."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def event(
    wall_time: float, step: int, *, file_version: str | None = None, scalar: tuple[str, float] | None = None
) -> bytes:
    """An `Event` protobuf: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalar is not None:
        tag, value = scalar
        summary_value = _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value)  # tag, simple_value
        out += _bytes_field(5, _bytes_field(1, summary_value))  # Summary.value (repeated)
    return out


def record(payload: bytes) -> bytes:
    """TFRecord framing: length, masked CRC of the length, payload, masked CRC of the payload."""
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", _masked(crc32c(header))) + payload + struct.pack("<I", _masked(crc32c(payload)))


class EventFileWriter:
    """Writes `events.out.tfevents.<time>.<host>` in `logdir`, scalars only."""

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        Path(logdir).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = Path(logdir) / name
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        self._file.write(record(event(time.time(), 0, file_version="brain.Event:2")))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._file.write(record(event(time.time(), step, scalar=(tag, float(value)))))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def scalar_writer(logdir: str | os.PathLike[str]) -> ScalarWriter:
    """torch's `SummaryWriter` when tensorboard is installed, else `EventFileWriter`."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return EventFileWriter(logdir)
    writer: Any = SummaryWriter(str(logdir))
    return writer
