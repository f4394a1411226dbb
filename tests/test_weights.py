"""Weight cache: fetch from a loopback server, resume, checksums, offline reads, loading."""

import json

import pytest
import torch

from noise2map.download import download
from noise2map.errors import CheckpointError, ChecksumError
from noise2map.weights import CHECKPOINTS, LOCK, fetch, load_into, resolve

MIT = "mit_b0.imagenet.safetensors"


@pytest.fixture
def mit_b0_checkpoint(file_server, tmp_path):
    """A real MiT-B0 encoder state dict (random values) served where the hub would serve it."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    torch.manual_seed(0)
    encoder = smp.Unet("mit_b0", encoder_weights=None).encoder
    path = tmp_path / "mit.safetensors"
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path))
    file_server.files[CHECKPOINTS[MIT].path] = path.read_bytes()
    return encoder


def test_fetch_records_source_and_sha256_then_loads_offline(file_server, mit_b0_checkpoint, tmp_path):
    import segmentation_models_pytorch as smp

    cache = tmp_path / "cache"
    lock = fetch([MIT], cache, base_url=file_server.url, quiet=True)
    assert lock[MIT]["url"] == f"{file_server.url}/{CHECKPOINTS[MIT].path}"
    assert len(lock[MIT]["sha256"]) == 64
    assert json.loads((cache / LOCK).read_text()) == lock
    model = smp.Unet("mit_b0", encoder_weights=None)
    load_into(model.encoder, resolve(MIT, cache))
    for key, value in mit_b0_checkpoint.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[key], value)
    n = len(file_server.requests)
    fetch([MIT], cache, base_url=file_server.url, quiet=True)  # verified: not fetched again
    assert len(file_server.requests) == n


def test_interrupted_download_continues_with_a_range_request(file_server, tmp_path):
    body = bytes(range(256)) * 4096  # 1 MiB
    file_server.files["big.bin"] = body
    file_server.cut["big.bin"] = 300_000
    digest = download(f"{file_server.url}/big.bin", tmp_path / "big.bin", backoff=0.01, quiet=True)
    assert (tmp_path / "big.bin").read_bytes() == body
    assert file_server.requests == [("big.bin", None), ("big.bin", "bytes=300000-")]
    assert digest == __import__("hashlib").sha256(body).hexdigest()
    assert not (tmp_path / "big.bin.part").exists()


def test_checksum_mismatch_is_a_clear_error_and_removes_the_file(file_server, tmp_path):
    file_server.files["w.bin"] = b"weights"
    with pytest.raises(ChecksumError, match="w.bin.part is corrupt.*SHA-256"):
        download(f"{file_server.url}/w.bin", tmp_path / "w.bin", sha256="0" * 64, quiet=True)
    assert not (tmp_path / "w.bin").exists() and not (tmp_path / "w.bin.part").exists()


def test_a_changed_source_is_refused_against_the_recorded_digest(file_server, mit_b0_checkpoint, tmp_path):
    cache = tmp_path / "cache"
    fetch([MIT], cache, base_url=file_server.url, quiet=True)
    (cache / MIT).write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="does not match its recorded SHA-256"):
        resolve(MIT, cache)
    file_server.files[CHECKPOINTS[MIT].path] = b"a different file"
    with pytest.raises(ChecksumError):
        fetch([MIT], cache, base_url=file_server.url, quiet=True)
    assert not (cache / MIT).exists()


def test_missing_checkpoint_names_the_file_and_the_fetch_command(tmp_path):
    with pytest.raises(CheckpointError) as err:
        resolve(MIT, tmp_path)
    message = str(err.value)
    assert str(tmp_path / MIT) in message
    assert f"noise2map weights fetch {MIT} --cache {tmp_path}" in message and "weights: none" in message


def test_a_checkpoint_that_does_not_fit_is_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"conv.weight": torch.zeros(1)}, str(path))
    with pytest.raises(CheckpointError, match="bad.safetensors does not fit"):
        load_into(torch.nn.Linear(2, 2), path)


def test_registry_names_every_paper_checkpoint():
    from baselines import MODELS

    needed = {name for spec in MODELS.values() for name in spec.weights}
    assert needed <= set(CHECKPOINTS)
    assert "ddpm-church-256/diffusion_pytorch_model.bin" in CHECKPOINTS
    for c in CHECKPOINTS.values():  # a hub path, a full URL, or where a person gets it
        assert (c.path or "").count("/resolve/") == 1 or (c.path or "").startswith("https://") or c.manual


def test_a_manual_checkpoint_says_where_to_get_it_then_is_recorded(tmp_path):
    name = "vmamba_tiny_e292.pth"
    with pytest.raises(CheckpointError) as err:
        fetch([name], tmp_path, quiet=True)
    assert str(tmp_path / name) in str(err.value) and "VMamba README" in str(err.value)
    (tmp_path / name).write_bytes(b"user supplied")  # not a torch file: named, and left where it is
    with pytest.raises(CheckpointError, match="not a torch checkpoint.*left in place"):
        fetch([name], tmp_path, quiet=True)
    assert (tmp_path / name).exists()
    torch.save({"w": torch.zeros(1)}, tmp_path / name)
    lock = fetch([name], tmp_path, quiet=True)
    assert lock[name]["url"].startswith("user-supplied") and resolve(name, tmp_path) == tmp_path / name


def test_rs3mamba_loads_vmamba_tiny_as_the_official_code(tmp_path):
    import re

    from baselines import build_model
    from baselines.rs3mamba import load_vmamba_tiny

    torch.manual_seed(0)
    source = build_model("rs3mamba", "demo").vssm_encoder.state_dict()
    # the file's own naming: downsamples.i → layers.i.downsample, plus parts RS3Mamba skips
    ckpt = {re.sub(r"^downsamples\.(\d+)", r"layers.\1.downsample", k): v for k, v in source.items()}
    ckpt["head.weight"] = torch.zeros(3)
    torch.save({"model": ckpt}, tmp_path / "vmamba_tiny_e292.pth")
    torch.manual_seed(1)
    model = build_model("rs3mamba", "demo")
    load_vmamba_tiny(model, tmp_path / "vmamba_tiny_e292.pth")
    for key, value in source.items():
        if not key.startswith("patch_embed"):
            assert torch.equal(model.vssm_encoder.state_dict()[key], value), key


def test_released_backbone_is_pinned_at_its_first_commit_and_exported(file_server, tmp_path):
    """ali97/noise2map's aid-10k folder, served as the hub serves it: config.json from main
    (X-Repo-Commit names the commit), the weights from that commit only, then exported as the
    UNet state dict Noise2Map fine-tunes from."""
    from safetensors.torch import save_file

    from baselines.noise2map_models import DEMO_UNET
    from noise2map.models.noise2map import CHURCH_CONFIG, build_unet
    from noise2map.weights import RELEASED_REPO, export_released_backbone, released_backbone_names

    config_name, weights_name = released_backbone_names("aid-10k")
    commit = "0123456789abcdef0123456789abcdef01234567"
    torch.manual_seed(4)
    unet = build_unet(DEMO_UNET)  # the test's size; the hub's is the 113.7M church UNet
    saved = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(saved))
    config = {**json.loads(CHURCH_CONFIG.read_text()), **DEMO_UNET, "_class_name": "UNet2DModelFlex",
              "use_timestep": True}
    file_server.files[CHECKPOINTS[config_name].path] = json.dumps(config).encode()
    file_server.headers[CHECKPOINTS[config_name].path] = {"X-Repo-Commit": commit}
    file_server.files[f"{RELEASED_REPO}/resolve/{commit}/aid-10k/diffusion_pytorch_model.safetensors"] = \
        saved.read_bytes()
    cache = tmp_path / "cache"
    lock = fetch([config_name, weights_name], cache, base_url=file_server.url, quiet=True)
    assert lock["_revisions"] == {RELEASED_REPO: commit}
    assert lock[weights_name]["revision"] == commit and f"/resolve/{commit}/" in lock[weights_name]["url"]
    out = export_released_backbone("aid-10k", cache, tmp_path / "released" / "noise2map_unet.pt", DEMO_UNET)
    exported = torch.load(out, weights_only=True)
    assert exported.keys() == unet.state_dict().keys()
    assert all(torch.equal(exported[k], v) for k, v in unet.state_dict().items())
    assert json.loads(out.with_suffix(".json").read_text())["revision"] == commit
    # a cached file edited after its fetch is refused (its recorded SHA-256 no longer matches)
    (cache / config_name).write_text(json.dumps({**config, "attention_head_dim": 8}))
    with pytest.raises(ChecksumError, match="does not match its recorded SHA-256"):
        export_released_backbone("aid-10k", cache, tmp_path / "x.pt", DEMO_UNET)


def test_released_source_is_what_noise2map_runs_fine_tune(tmp_path):
    from noise2map.config import deep_merge, load_config, pretrained_unet_path, validate_config

    paper = load_config("workflow/config/paper.yaml")
    assert pretrained_unet_path(paper) == "results/pretrain/aid/noise2map_unet.pt"
    released = deep_merge(paper, {"pretrain": {"source": "released", "released_backbone": "sat2gen"}})
    assert pretrained_unet_path(released) == "results/pretrain/released/sat2gen/noise2map_unet.pt"
    assert pretrained_unet_path(released, "sr3") == "results/pretrain/aid/sr3_unet.pt"  # DDPM-CD keeps its own
    assert pretrained_unet_path(released, dataset="imagenet") == "results/pretrain/imagenet/noise2map_unet.pt"
    demo = deep_merge(load_config("workflow/config/demo.yaml"), {"pretrain": {"source": "released"}})
    from noise2map.errors import ConfigError

    with pytest.raises(ConfigError, match="released backbones are paper-size"):
        validate_config(demo)
