"""The Wav2Lip generator (96x96) and LiveTalking's 256x256 variant, laid out to load their checkpoints.

Both are a U-Net: a face encoder reads the target frame with its lower half blanked next to a
reference frame of the same person (6 channels), an audio encoder turns a 0.2 s mel window
(1, 80, 16) into one 512-vector, and the decoder grows that vector back to a face, concatenating
the encoder feature of the same size after every stage. The output is the whole face crop with a
mouth that matches the audio, in [0, 1] (sigmoid).

Module and parameter names follow Rudrabha/Wav2Lip `models/wav2lip.py` + `models/conv.py` and
lipku/LiveTalking `avatars/wav2lip/models/wav2lip_v2.py` exactly (e.g.
`face_encoder_blocks.0.0.conv_block.0.weight`), because their released checkpoints are plain
state dicts keyed by those names. The layer lists below are data, not code, so the two variants
can be read side by side.

Colour order: the networks were trained on OpenCV frames, so input and output are BGR.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Conv2d", "Conv2dTranspose", "Wav2Lip", "Wav2Lip256", "masked_face_input"]

MEL_BANDS = 80
MEL_STEPS = 16
FACE_CHANNELS = 6

# One stage: (in, out, kernel, stride, padding, residual 3x3 convs after it).
_Stage = tuple[int, int, int, int | tuple[int, int], int, int]

# The audio encoder (identical in both variants): (1, 80, 16) -> (512, 1, 1).
# Strides (3, 1), 3, (3, 2) shrink 80x16 to 27x16, 9x6, 3x3; the last 3x3 conv without padding to 1x1.
_AUDIO: tuple[_Stage, ...] = (
    (1, 32, 3, 1, 1, 2),
    (32, 64, 3, (3, 1), 1, 2),
    (64, 128, 3, 3, 1, 2),
    (128, 256, 3, (3, 2), 1, 1),
    (256, 512, 3, 1, 0, 0),
    (512, 512, 1, 1, 0, 0),
)

# Face encoder stages of the 96 px net; each inner tuple is one `face_encoder_blocks[i]`.
_FACE_96: tuple[tuple[_Stage, ...], ...] = (
    ((6, 16, 7, 1, 3, 0),),  # 96
    ((16, 32, 3, 2, 1, 2),),  # 48
    ((32, 64, 3, 2, 1, 3),),  # 24
    ((64, 128, 3, 2, 1, 2),),  # 12
    ((128, 256, 3, 2, 1, 2),),  # 6
    ((256, 512, 3, 2, 1, 1),),  # 3
    ((512, 512, 3, 1, 0, 0), (512, 512, 1, 1, 0, 0)),  # 1
)
# 256 px: the same first six stages (256 .. 8), one more halving to 4, then a 4x4 conv to 1x1.
_FACE_256: tuple[tuple[_Stage, ...], ...] = (
    *_FACE_96[:6],
    ((512, 512, 3, 2, 1, 1),),  # 4
    ((512, 512, 4, 1, 0, 0), (512, 512, 1, 1, 0, 0)),  # 1
)

# One decoder stage: (in, out, kernel, stride, padding, output_padding, residual convs); the first
# stage of every decoder is a plain 1x1 Conv2d (marked by kernel 1), the others a transposed conv.
# `in` = previous output + the skip feature it is concatenated with.
_Up = tuple[int, int, int, int, int, int, int]
_DECODER_96: tuple[_Up, ...] = (
    (512, 512, 1, 1, 0, 0, 0),  # 1, + 512 skip
    (1024, 512, 3, 1, 0, 0, 1),  # 3, + 512
    (1024, 512, 3, 2, 1, 1, 2),  # 6, + 256
    (768, 384, 3, 2, 1, 1, 2),  # 12, + 128
    (512, 256, 3, 2, 1, 1, 2),  # 24, + 64
    (320, 128, 3, 2, 1, 1, 2),  # 48, + 32
    (160, 64, 3, 2, 1, 1, 2),  # 96, + 16
)
_DECODER_256: tuple[_Up, ...] = (
    (512, 512, 1, 1, 0, 0, 0),  # 1, + 512
    (1024, 512, 4, 1, 0, 0, 1),  # 4, + 512
    (1024, 512, 3, 2, 1, 1, 1),  # 8, + 512
    (1024, 512, 3, 2, 1, 1, 2),  # 16, + 256
    (768, 384, 3, 2, 1, 1, 2),  # 32, + 128
    (512, 256, 3, 2, 1, 1, 2),  # 64, + 64
    (320, 128, 3, 2, 1, 1, 2),  # 128, + 32
    (160, 64, 3, 2, 1, 1, 2),  # 256, + 16
)


class Conv2d(nn.Module):
    """Conv + BatchNorm + ReLU, optionally adding its input before the ReLU (same shape only).

    The conv and norm sit in `conv_block` (an nn.Sequential) because the checkpoints name them
    `conv_block.0` and `conv_block.1`.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """Transposed conv + BatchNorm + ReLU: one upsampling step of the decoder."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _stage_layers(stage: _Stage) -> list[nn.Module]:
    cin, cout, kernel, stride, padding, residuals = stage
    layers: list[nn.Module] = [Conv2d(cin, cout, kernel, stride, padding)]
    layers += [Conv2d(cout, cout, 3, 1, 1, residual=True) for _ in range(residuals)]
    return layers


def _up_stage(up: _Up) -> nn.Sequential:
    cin, cout, kernel, stride, padding, output_padding, residuals = up
    first: nn.Module = (
        Conv2d(cin, cout, 1, 1, 0)
        if kernel == 1
        else Conv2dTranspose(cin, cout, kernel, stride, padding, output_padding)
    )
    return nn.Sequential(first, *(Conv2d(cout, cout, 3, 1, 1, residual=True) for _ in range(residuals)))


class _Wav2LipGenerator(nn.Module):
    """The shared U-Net; subclasses only choose the layer lists and the face size."""

    face_size: int

    def __init__(self, face: tuple[tuple[_Stage, ...], ...], decoder: tuple[_Up, ...]) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            nn.Sequential(*(layer for stage in block for layer in _stage_layers(stage))) for block in face
        )
        self.audio_encoder = nn.Sequential(*(layer for stage in _AUDIO for layer in _stage_layers(stage)))
        self.face_decoder_blocks = nn.ModuleList(_up_stage(up) for up in decoder)
        # 64 decoder channels + the 16 of the first encoder stage.
        self.output_block = nn.Sequential(
            Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0), nn.Sigmoid()
        )

    def forward(self, audio_sequences: torch.Tensor, face_sequences: torch.Tensor) -> torch.Tensor:
        """Faces for mel windows, in upstream's argument order (audio first).

        4-D: audio (B, 1, 80, 16), face (B, 6, S, S) -> (B, 3, S, S).
        5-D, as upstream trains: audio (B, T, 1, 80, 16), face (B, 6, T, S, S) -> (B, 3, T, S, S).
        Face channels: BGR target frame with rows S//2.. set to 0, then the BGR reference, in [0, 1].
        """
        if face_sequences.dim() == 5:
            batch, steps = audio_sequences.shape[:2]
            audio = audio_sequences.reshape(batch * steps, *audio_sequences.shape[2:])
            face = face_sequences.transpose(1, 2).reshape(
                batch * steps, face_sequences.shape[1], *face_sequences.shape[3:]
            )
            out = self._generate(audio, face)
            return out.reshape(batch, steps, *out.shape[1:]).transpose(1, 2)
        return self._generate(audio_sequences, face_sequences)

    def _generate(self, audio: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        size = self.face_size
        if audio.shape[1:] != (1, MEL_BANDS, MEL_STEPS) or face.shape[1:] != (FACE_CHANNELS, size, size):
            raise ValueError(
                f"{type(self).__name__} expects audio (B, 1, {MEL_BANDS}, {MEL_STEPS}) and face "
                f"(B, {FACE_CHANNELS}, {size}, {size}); got {tuple(audio.shape)} and {tuple(face.shape)}"
            )
        if audio.shape[0] != face.shape[0]:
            raise ValueError(f"{audio.shape[0]} mel windows for {face.shape[0]} faces")
        skips = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(audio)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)


class Wav2Lip(_Wav2LipGenerator):
    """Rudrabha/Wav2Lip's generator: 96x96 faces, ~36.3 M parameters (wav2lip.pth, wav2lip_gan.pth)."""

    face_size = 96

    def __init__(self) -> None:
        super().__init__(_FACE_96, _DECODER_96)


class Wav2Lip256(_Wav2LipGenerator):
    """LiveTalking's wav2lip256 generator (its `wav2lip_v2.py`): 256x256 faces, one more encoder and
    decoder stage than Wav2Lip, same audio encoder and mel input."""

    face_size = 256

    def __init__(self) -> None:
        super().__init__(_FACE_256, _DECODER_256)


def masked_face_input(faces: torch.Tensor, references: torch.Tensor | None = None) -> torch.Tensor:
    """The 6-channel face input: `faces` with the lower half zeroed, then `references`.

    faces, references: (B, 3, S, S) BGR in [0, 1]. Without references the frame is its own reference,
    as upstream's inference and LiveTalking do (the mouth is drawn from the audio, the rest copied).
    """
    references = faces if references is None else references
    if faces.shape != references.shape:
        raise ValueError(f"faces {tuple(faces.shape)} and references {tuple(references.shape)} differ in shape")
    masked = faces.clone()
    masked[..., faces.shape[-2] // 2 :, :] = 0
    return torch.cat((masked, references), dim=1)
