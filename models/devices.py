"""`device: auto | cpu | cuda | cuda:N` from config -> a torch device, with a clear error when absent."""

from __future__ import annotations

import re

import torch


def resolve_device(choice: str) -> torch.device:
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", choice):
        raise ValueError(f"device {choice!r} is not one of auto, cpu, cuda, cuda:N")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was asked for but torch sees no CUDA GPU; use 'auto' or 'cpu'")
        index = int(choice.split(":")[1]) if ":" in choice else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {choice!r}: torch sees {torch.cuda.device_count()} GPU(s), cuda:0 .. ")
        return torch.device("cuda", index)
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)
