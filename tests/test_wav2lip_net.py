"""Wav2Lip generators: upstream's layout and size, batching, and checkpoints that load or say why not."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from models.lipsync.wav2lip_checkpoint import CheckpointError, detect_architecture, load_wav2lip
from models.lipsync.wav2lip_net import Wav2Lip, Wav2Lip256, masked_face_input


@pytest.fixture(scope="module")
def wav2lip() -> Wav2Lip:
    """A Wav2Lip with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = Wav2Lip()
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def upstream_file(wav2lip: Wav2Lip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint laid out like upstream's wav2lip.pth: DataParallel keys, optimizer and counters,
    in the pre-1.6 (non-zip) format that PyTorch 1.1 wrote them in."""
    path = tmp_path_factory.mktemp("ckpt") / "wav2lip.pth"
    state = {f"module.{k}": v for k, v in wav2lip.state_dict().items()}
    extras = {"optimizer": {"state": {}, "param_groups": []}, "global_step": 3, "global_epoch": 1}
    torch.save({"state_dict": state, **extras}, path, _use_new_zipfile_serialization=False)
    return path


def _shape_only(model_cls: type[torch.nn.Module]) -> dict[str, torch.Tensor]:
    """A state dict with the right shapes whose tensors share one element (tiny on disk)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in model_cls().state_dict().items()}
    one = torch.zeros(1)
    return {k: one.expand(shape) if len(shape) else torch.tensor(0) for k, shape in shapes.items()}


def test_parameter_count_and_names_match_upstream(wav2lip: Wav2Lip) -> None:
    assert sum(p.numel() for p in wav2lip.parameters()) == pytest.approx(36.3e6, abs=0.05e6)
    assert sum(p.numel() for p in wav2lip.parameters()) == 36_298_035
    keys = wav2lip.state_dict().keys()
    for key in (
        "face_encoder_blocks.0.0.conv_block.0.weight",
        "face_encoder_blocks.6.1.conv_block.1.running_var",
        "audio_encoder.12.conv_block.0.bias",
        "face_decoder_blocks.6.2.conv_block.1.num_batches_tracked",
        "output_block.0.conv_block.0.weight",
        "output_block.1.weight",
    ):
        assert key in keys
    assert len(keys) == 352
    with torch.device("meta"):
        big = Wav2Lip256()
    assert sum(p.numel() for p in big.parameters()) == 53_605_683
    assert big.state_dict()["face_encoder_blocks.7.0.conv_block.0.weight"].shape == (512, 512, 4, 4)
    assert big.state_dict()["face_decoder_blocks.1.0.conv_block.0.weight"].shape == (1024, 512, 4, 4)


def test_batched_forward_equals_one_at_a_time(wav2lip: Wav2Lip) -> None:
    torch.manual_seed(1)
    mel = torch.randn(4, 1, 80, 16)
    face = masked_face_input(torch.rand(4, 3, 96, 96))
    with torch.no_grad():
        batched = wav2lip(mel, face)
        single = torch.cat([wav2lip(mel[i : i + 1], face[i : i + 1]) for i in range(4)])
        sequence = wav2lip(mel.reshape(2, 2, 1, 80, 16), face.reshape(2, 2, 6, 96, 96).transpose(1, 2))
    assert batched.shape == (4, 3, 96, 96)
    assert batched.min() >= 0 and batched.max() <= 1
    assert (batched - single).abs().max() <= 1e-5
    assert sequence.shape == (2, 3, 2, 96, 96)
    assert (sequence.transpose(1, 2).reshape(4, 3, 96, 96) - batched).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="96"):
        wav2lip(mel, torch.rand(4, 6, 128, 128))


def test_wav2lip256_runs_on_256_faces() -> None:
    torch.manual_seed(2)
    model = Wav2Lip256().eval()
    mel, face = torch.randn(2, 1, 80, 16), masked_face_input(torch.rand(2, 3, 256, 256))
    with torch.no_grad():
        out = model(mel, face)
        first = model(mel[:1], face[:1])
    assert out.shape == (2, 3, 256, 256)
    assert (out[:1] - first).abs().max() <= 1e-5


def test_masked_face_input() -> None:
    faces, refs = torch.rand(2, 3, 96, 96), torch.rand(2, 3, 96, 96)
    x = masked_face_input(faces, refs)
    assert x.shape == (2, 6, 96, 96)
    assert (x[:, :3, 48:] == 0).all() and torch.equal(x[:, :3, :48], faces[:, :, :48])
    assert torch.equal(x[:, 3:], refs)
    assert torch.equal(masked_face_input(faces)[:, 3:], faces)


def test_upstream_layout_loads(wav2lip: Wav2Lip, upstream_file: Path) -> None:
    loaded = load_wav2lip(upstream_file, "wav2lip", "cpu")
    assert not loaded.training
    for (name, mine), theirs in zip(loaded.state_dict().items(), wav2lip.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), name


@pytest.mark.parametrize("prefix", ["", "module."])
def test_plain_state_dict_loads(wav2lip: Wav2Lip, tmp_path: Path, prefix: str) -> None:
    state = {prefix + k: v for k, v in wav2lip.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "plain.pth"
    torch.save(state, path)
    loaded = load_wav2lip(path)
    key = "audio_encoder.3.conv_block.0.weight"
    assert torch.equal(loaded.state_dict()[key], wav2lip.state_dict()[key])


def test_missing_key_is_named(wav2lip: Wav2Lip, tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in wav2lip.state_dict().items()}
    del state["module.face_decoder_blocks.3.0.conv_block.0.weight"]
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as err:
        load_wav2lip(path, "wav2lip")
    message = str(err.value)
    assert str(path) in message
    assert "1 missing key (face_decoder_blocks.3.0.conv_block.0.weight)" in message
    assert "0 unexpected keys" in message and "0 misshaped keys" in message
    assert "looks like a Wav2Lip-like generator" in message


def test_misshaped_key_is_named(wav2lip: Wav2Lip, tmp_path: Path) -> None:
    state = dict(wav2lip.state_dict())
    state["output_block.1.weight"] = torch.zeros(3, 32, 3, 3)
    path = tmp_path / "misshaped.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(
        CheckpointError, match=r"output_block\.1\.weight: expected \[3, 32, 1, 1\], got \[3, 32, 3, 3\]"
    ):
        load_wav2lip(path)


def test_wav2lip256_file_loaded_as_wav2lip_says_so(tmp_path: Path) -> None:
    path = tmp_path / "wav2lip256.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _shape_only(Wav2Lip256).items()}}, path)
    with pytest.raises(CheckpointError) as err:
        load_wav2lip(path, "wav2lip")
    message = str(err.value)
    assert "looks like wav2lip256" in message and "arch='wav2lip256'" in message
    assert "unexpected key" in message and "face_encoder_blocks.7." in message
    assert "misshaped key" in message and "and " in message  # more than five: counted, not all listed


def test_other_networks_are_recognised(tmp_path: Path) -> None:
    syncnet = {"face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7)}
    syncnet["audio_encoder.0.conv_block.0.weight"] = torch.zeros(32, 1, 3, 3)
    assert "SyncNet" in detect_architecture(syncnet)
    assert "discriminator" in detect_architecture({"binary_pred.0.weight": torch.zeros(1, 512, 1, 1)})
    assert "wav2lip384" in detect_architecture({"sam.sa.conv1.weight": torch.zeros(1, 2, 7, 7)})
    assert detect_architecture({"x": torch.zeros(1)}) == "no known Wav2Lip-family network"
    assert detect_architecture(_shape_only(Wav2Lip)) == "wav2lip"
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": syncnet}, path)
    with pytest.raises(CheckpointError, match="SyncNet lip-sync expert"):
        load_wav2lip(path, "wav2lip256")


def test_unreadable_files_fail_clearly(wav2lip: Wav2Lip, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_wav2lip(tmp_path / "absent.pth")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_wav2lip(text)
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(CheckpointError, match=r"beyond tensors.*argparse\.Namespace"):
        load_wav2lip(pickled)
    with pytest.raises(ValueError, match="unknown Wav2Lip architecture"):
        load_wav2lip(text, "wav2lip384")  # type: ignore[arg-type]
