"""The GPU service's wire: small msgpack control messages over a unix socket, frames in shared memory.

Like vLLM's front-end/engine split (ZMQ + msgpack + shared memory), only control crosses the
socket: a render request is its face id, its poses (a few floats a frame), its deadline and the
ring slots its frames go to. The frames themselves are written by the service straight into the
worker's ring (models/frame_ring.py), which the worker hands over once, as a file descriptor
(SCM_RIGHTS) on the service's second socket, `<path>.fds`.

A message is a 4-byte big-endian length, then a msgpack map with an "op" key:
  hello     {pid}                                        -> hello {client, device}
  prepare   {id, pack, size, background}                 -> prepared {id, face, kind, size, mouth_box,
                                                            still (I420 bytes, once), cost} | error
  render    {id, face, params (float32 bytes), ring, slots, deadline, expires, key} -> done {id} | error
  cancel    {id}                                         (the job still answers: done or error)
  forget    {key}
  metrics   {id}                                         -> metrics {id, data}
  transcribe {id, slot, samples, beam, urgent}           -> transcribed {id, text} | error
  voice     {id, key: how to load it}                    -> voice {id, rate} | error
  synthesize {id, ring, text}                            -> chunk {id, slot, samples, rate, phonemes} ...,
             said {id} | error; the client answers each chunk with heard {id, slot} (the slot is free)
             (the audio, float32 16 kHz, lies in the client's audio ring: ring 0)
  error     {id, kind: pack | overloaded | expired | failed | bad, error}
Ring registration on `<path>.fds`: {client, ring, shape, slots} with the memfd -> b"ok" or an error text.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import msgspec

MAX_MESSAGE = 16 << 20
"""A message larger than this is a bug or an attack: the connection is dropped."""
_LENGTH = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict)


class WireError(ConnectionError):
    """The peer sent something that is not a message of this wire."""


def pack(message: dict[str, Any]) -> bytes:
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next message; raises asyncio.IncompleteReadError at the end of the stream, WireError on garbage."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_MESSAGE:
        raise WireError(f"a message of {length} bytes (at most {MAX_MESSAGE})")
    try:
        message = _decoder.decode(await reader.readexactly(length))
    except msgspec.DecodeError as exc:
        raise WireError(f"not msgpack: {exc}") from None
    if not isinstance(message.get("op"), str):
        raise WireError("a message without an op")
    return message


def read_message_blocking(sock: socket.socket) -> dict[str, Any]:
    """The next message from a blocking socket (a worker thread's own connection)."""
    (length,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
    if length > MAX_MESSAGE:
        raise WireError(f"a message of {length} bytes (at most {MAX_MESSAGE})")
    try:
        message = _decoder.decode(_recv_exactly(sock, length))
    except msgspec.DecodeError as exc:
        raise WireError(f"not msgpack: {exc}") from None
    if not isinstance(message.get("op"), str):
        raise WireError("a message without an op")
    return message


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("the GPU service closed the connection")
        data += part
    return bytes(data)


def fds_path(path: str) -> str:
    """Where the service takes ring file descriptors."""
    return path + ".fds"


def send_ring(path: str, header: bytes, fd: int) -> bytes:
    """Blocking: one connection to the service's fd socket carrying a ring's memfd; -> its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(path)
        socket.send_fds(conn, [header], [fd])
        return conn.recv(4096)
