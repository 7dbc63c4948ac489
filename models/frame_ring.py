"""Host memory for rendered frames: fixed slots, leased per frame, back once nobody holds the frame.

A renderer writes each frame straight into the memory it will be encoded from, so nothing is
allocated or copied per frame on the way (the `tensor.cpu()` of a fresh pageable buffer moved
1.5 GB/s on an H200 box; a copy into reused pinned memory moved 55 GB/s, notes/gpu-h200.md).
One ring is one mmap of `slots` frames of one shape:

  heap    anonymous memory, for a renderer in this process on the CPU;
  pinned  the same, page-locked for CUDA (cudaHostRegister), so device copies into it are DMA;
  shared  a memfd: another process (the GPU service) maps the same pages, writes the frames, and
          this process encodes them. A memfd has no name, so nothing is ever left in /dev/shm,
          even when a process is killed.

A leased frame is an ordinary numpy array. Its slot comes back when the last array viewing it is
gone (a finalizer on the per-slot buffer object every view keeps alive), so a frame held by the
Program as its "last picture", or queued at the encoder, is never overwritten under it.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import threading
import weakref
from collections import deque
from typing import Literal

import numpy as np

Memory = Literal["heap", "pinned", "shared"]


class FrameRing:
    """`slots` frames of `frame_shape` uint8 in one mapping; lease frames, they return by themselves.

    `extra_bytes`: room after each frame for what its renderer reads (an audio-driven model's audio
    window for that frame), so that crosses to the GPU service in the same shared memory too.
    """

    def __init__(
        self,
        frame_shape: tuple[int, ...],
        slots: int,
        *,
        memory: Memory = "heap",
        name: str = "",
        extra_bytes: int = 0,
    ) -> None:
        if slots < 1 or any(d < 1 for d in frame_shape) or extra_bytes < 0:
            raise ValueError(f"a ring needs slots >= 1 and a non-empty frame shape, got {slots} x {frame_shape}")
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.slots = slots
        self.memory = memory
        self.name = name
        self.frame_bytes = int(np.prod(self.frame_shape))
        self.extra_bytes = extra_bytes
        self.slot_bytes = self.frame_bytes + extra_bytes
        self.nbytes = self.slot_bytes * slots
        self._slot_type = ctypes.c_uint8 * self.frame_bytes
        self.fd: int | None = None
        if memory == "shared":
            self.fd = os.memfd_create(f"avatarcast-{name or 'frames'}", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, self.nbytes)
            self._map = mmap.mmap(self.fd, self.nbytes)
        else:
            self._map = mmap.mmap(-1, self.nbytes)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._pinned = False
        if memory == "pinned":
            self._pinned = pin(self.address, self.nbytes)
        self._free: deque[int] = deque(range(slots))
        self._lock = threading.Lock()  # finalizers run on whichever thread drops the last view
        self.leased_peak = 0

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def pinned(self) -> bool:
        return self._pinned

    def lease(self, n: int) -> list[np.ndarray] | None:
        """`n` frames to render into, or None when fewer than `n` slots are free (nothing is leased then)."""
        with self._lock:
            if len(self._free) < n:
                return None
            index = [self._free.popleft() for _ in range(n)]
            self.leased_peak = max(self.leased_peak, self.slots - len(self._free))
        return [self._frame(i) for i in index]

    def slot_of(self, frame: np.ndarray) -> int:
        """The slot a leased frame (or a view starting at its first byte) lives in."""
        offset = frame.__array_interface__["data"][0] - self.address
        if not 0 <= offset < self.nbytes or offset % self.slot_bytes:
            raise ValueError("the array is not a frame of this ring")
        return offset // self.slot_bytes

    def view(self, slot: int) -> np.ndarray:
        """Slot `slot` as an array, for the process that fills it (no lease: its owner leased it)."""
        return self._frame(slot, lease=False)

    def extra(self, frame: np.ndarray) -> np.ndarray:
        """The extra bytes after a leased frame (uint8 (extra_bytes,)), valid while the frame is held."""
        return _extra_view(self._map, self.slot_of(frame), self.slot_bytes, self.frame_bytes, self.extra_bytes)

    def _frame(self, slot: int, *, lease: bool = True) -> np.ndarray:
        buffer = self._slot_type.from_buffer(self._map, slot * self.slot_bytes)
        if lease:
            weakref.finalize(buffer, self._release, slot)
        return np.frombuffer(buffer, np.uint8).reshape(self.frame_shape)

    def _release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)

    def close(self) -> None:
        """Unmap (once no frame of it is held anywhere) and close the memfd."""
        if self._pinned:
            unpin(self.address)
            self._pinned = False
        with contextlib.suppress(BufferError):  # frames still held: the mapping goes when they do
            self._map.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class MappedRing:
    """Another process's ring, mapped from its memfd: the renderer's side of a shared ring."""

    def __init__(
        self, fd: int, frame_shape: tuple[int, ...], slots: int, *, extra_bytes: int = 0, pin_memory: bool = False
    ) -> None:
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.slots = slots
        self.frame_bytes = int(np.prod(self.frame_shape))
        self.extra_bytes = extra_bytes
        self.slot_bytes = self.frame_bytes + extra_bytes
        self.nbytes = self.slot_bytes * slots
        self._slot_type = ctypes.c_uint8 * self.frame_bytes
        if os.fstat(fd).st_size < self.nbytes:
            raise ValueError(f"the shared ring holds {os.fstat(fd).st_size} bytes, not {self.nbytes}")
        self._map = mmap.mmap(fd, self.nbytes)
        os.close(fd)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.pinned = pin(self.address, self.nbytes) if pin_memory else False

    def view(self, slot: int) -> np.ndarray:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside the ring (0..{self.slots - 1})")
        buffer = self._slot_type.from_buffer(self._map, slot * self.slot_bytes)
        return np.frombuffer(buffer, np.uint8).reshape(self.frame_shape)

    def extra(self, slot: int) -> np.ndarray:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is outside the ring (0..{self.slots - 1})")
        return _extra_view(self._map, slot, self.slot_bytes, self.frame_bytes, self.extra_bytes)

    def close(self) -> None:
        if self.pinned:
            unpin(self.address)
            self.pinned = False
        with contextlib.suppress(BufferError):
            self._map.close()


def _extra_view(mapping: mmap.mmap, slot: int, slot_bytes: int, frame_bytes: int, extra_bytes: int) -> np.ndarray:
    if not extra_bytes:
        raise ValueError("this ring has no extra bytes per frame")
    buffer = (ctypes.c_uint8 * extra_bytes).from_buffer(mapping, slot * slot_bytes + frame_bytes)
    return np.frombuffer(buffer, np.uint8)


def pin(address: int, nbytes: int) -> bool:
    """Page-lock host memory for CUDA copies; False (pageable, still correct) where there is no CUDA."""
    import torch

    if not torch.cuda.is_available():
        return False
    return int(torch.cuda.cudart().cudaHostRegister(address, nbytes, 0)) == 0


def unpin(address: int) -> None:
    import torch

    torch.cuda.cudart().cudaHostUnregister(address)
