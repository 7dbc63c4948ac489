"""`device: auto | cpu | cuda` from config -> a torch device, with a clear error when absent."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> torch.device:
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device {choice!r} is not one of {DEVICE_CHOICES}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)
