"""Pretrained checkpoints: one cache directory, fetched once, read offline.

Every checkpoint the paper's setup starts from is listed here with its source (pinned
revision where the hub has one). ``noise2map weights fetch`` downloads them into the cache
(resumable, verified) and records each file's source and SHA-256 in ``weights.lock.json``.
Training reads only from the cache: a missing checkpoint stops the run with the command that
fetches it, and a file that no longer matches its recorded SHA-256 is refused. ``weights:
none`` in a config trains from scratch on purpose.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from noise2map.download import download, file_digest
from noise2map.errors import CheckpointError, ChecksumError, UnknownNameError
from noise2map.io import read_json, write_json

log = logging.getLogger(__name__)
LOCK = "weights.lock.json"
REVISIONS = "_revisions"  # lock entry: hub repo → the commit its files were fetched at
HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Checkpoint:
    """One pretrained checkpoint.

    Attributes:
        name: registry name, also the file's path inside the cache.
        path: repository path (``owner/repo/resolve/<revision>/<file>``) under the hub URL, or
            a full URL for a file hosted elsewhere.
        description: what it is and which paper setting uses it.
        sha256: pinned digest where known; otherwise the digest recorded at the first fetch
            (trust on first use) is what later reads are checked against.
        manual: for a file no script can download (a cloud-drive link), where to get it; the
            user puts it in the cache and ``fetch`` records its SHA-256.
    """

    name: str
    path: str | None
    description: str
    sha256: str | None = None
    manual: str | None = None

    def url(self, base_url: str = HUB, revision: str | None = None) -> str:
        if self.path is None:
            raise CheckpointError(f"{self.name} has no download address: {self.manual}")
        if "://" in self.path:  # hosted outside the hub; a mirror keeps host and path below its root
            return self.path if base_url == HUB else f"{base_url.rstrip('/')}/{self.path.split('://', 1)[1]}"
        path = self.path.replace("/resolve/main/", f"/resolve/{revision}/", 1) if revision else self.path
        return f"{base_url.rstrip('/')}/{path}"

    @property
    def repo(self) -> str | None:
        """``owner/repo`` of a hub file fetched from ``main`` (pinned at its first fetch)."""
        if self.path and "://" not in self.path and "/resolve/main/" in self.path:
            return self.path.split("/resolve/", 1)[0]
        return None


CHECKPOINTS = {c.name: c for c in [
    Checkpoint("resnet50.imagenet.safetensors",
               "smp-hub/resnet50.imagenet/resolve/00cb74e366966d59cd9a35af57e618af9f88efe9/model.safetensors",
               "ImageNet ResNet-50 encoder of the SMP baselines and FC-Siam-conc (smp's pinned revision)"),
    Checkpoint("mit_b0.imagenet.safetensors",
               "smp-hub/mit_b0.imagenet/resolve/9ce53d104d92d75aabb00aae70677aaab67e7c84/model.safetensors",
               "ImageNet MiT-B0 encoder of SegFormer (smp's pinned revision)"),
    Checkpoint("vit_base_patch16_224.dino.safetensors",
               "timm/vit_base_patch16_224.dino/resolve/main/model.safetensors",
               "DINO ViT-B/16 backbone of DPT"),
    Checkpoint("resnet18.fb_swsl_ig1b_ft_in1k.safetensors",
               "timm/resnet18.fb_swsl_ig1b_ft_in1k/resolve/main/model.safetensors",
               "semi-weakly supervised ResNet-18, the main branch of RS3Mamba"),
    # A diffusers folder (config + weights): from_pretrained converts its legacy attention keys.
    Checkpoint("vgg16_bn.tv_in1k.safetensors",
               "timm/vgg16_bn.tv_in1k/resolve/e00c01e7cee168262dcba6428dc4a8f41e27e965/model.safetensors",
               "torchvision ImageNet VGG16-BN: the Siamese encoder of CGNet-CD"),
    Checkpoint("vmamba_tiny_e292.pth", None,
               "VMamba-Tiny ImageNet checkpoint: the VSS branch of RS3Mamba (sstary/SSRS RS3Mamba/pretrain/)",
               manual="the VMamba authors' early release, linked from the VMamba README (MzeroMiko/VMamba) and "
                      "the RS3Mamba README (sstary/SSRS); it is shared through a cloud drive"),
    Checkpoint("vssm_base_0229_ckpt_epoch_237.pth",
               "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm_base_0229_ckpt_epoch_237.pth",
               "VMamba-Base ImageNet checkpoint (also Zenodo record 14037770): the encoder of MambaBCD-Base"),
    Checkpoint("ddpm-church-256/config.json", "google/ddpm-church-256/resolve/main/config.json",
               "google/ddpm-church-256 UNet config"),
    Checkpoint("ddpm-church-256/diffusion_pytorch_model.bin",
               "google/ddpm-church-256/resolve/main/diffusion_pytorch_model.bin",
               "google/ddpm-church-256 UNet: the initialisation of Noise2Map's AID pretraining"),
]}
DDPM_CHURCH = ("ddpm-church-256/config.json", "ddpm-church-256/diffusion_pytorch_model.bin")

# The released code's backbones (noise2map/model.py _WEIGHT_REGISTRY): hub ali97/noise2map, one
# diffusers UNet folder per pretraining. Saved by diffusers' save_pretrained (safetensors).
RELEASED_REPO = "ali97/noise2map"
RELEASED_BACKBONES = {
    "aid-10k": "AID 10k, from ddpm-church-256 (the released configs' aid_10k: Table I)",
    "sat2gen": "MAJOR-TOM Sentinel-2 (released key satellite: Table III)",
    "imagenet2gen": "ImageNet (released key imagenet: Table III)",
    "ddpm-church": "google/ddpm-church-256 as the release loads it (released key google)",
}
RELEASED_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def released_backbone_names(backbone: str) -> list[str]:
    """Cache names of one released backbone's files."""
    if backbone not in RELEASED_BACKBONES:
        raise UnknownNameError("released backbone", backbone, RELEASED_BACKBONES)
    return [f"noise2map-released/{backbone}/{f}" for f in RELEASED_FILES]


for _sub, _what in RELEASED_BACKBONES.items():
    for _file in RELEASED_FILES:
        _name = f"noise2map-released/{_sub}/{_file}"
        CHECKPOINTS[_name] = Checkpoint(_name, f"{RELEASED_REPO}/resolve/main/{_sub}/{_file}",
                                        f"released Noise2Map backbone {_sub}: {_what}")


def get_checkpoint(name: str) -> Checkpoint:
    try:
        return CHECKPOINTS[name]
    except KeyError:
        raise UnknownNameError("checkpoint", name, CHECKPOINTS) from None


def read_lock(cache: Path) -> dict:
    path = Path(cache) / LOCK
    return read_json(path, "delete it and run `noise2map weights fetch` again (files are re-verified)") \
        if path.is_file() else {}


def fetch(names, cache: str | Path, base_url: str = HUB, quiet: bool = False) -> dict:
    """Download the named checkpoints into ``cache`` (skipping verified ones); update the lock."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    lock = read_lock(cache)
    for name in names:
        ckpt = get_checkpoint(name)
        target = cache / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and _recorded_digest(ckpt, lock) == file_digest(target):
            log.info("%s: already in %s", name, cache)
            continue
        if ckpt.manual:
            lock[name] = _record_manual(ckpt, target, cache)
            write_json(cache / LOCK, lock)
            continue
        target.unlink(missing_ok=True)
        # A hub repo read from main is pinned at the commit its first file came from (the
        # X-Repo-Commit header): every later file of it, and every refetch, comes from there.
        revision = lock.get(REVISIONS, {}).get(ckpt.repo) if ckpt.repo else None
        url, headers = ckpt.url(base_url, revision), {}
        digest = download(url, target, sha256=ckpt.sha256 or _recorded_digest(ckpt, lock), quiet=quiet,
                          headers=headers)
        try:
            check_format(target)
        except CheckpointError:
            target.unlink(missing_ok=True)
            raise
        if ckpt.repo and not revision and headers.get("x-repo-commit"):
            revision = headers["x-repo-commit"]
            lock.setdefault(REVISIONS, {})[ckpt.repo] = revision
        lock[name] = {"url": url, "sha256": digest, "bytes": target.stat().st_size,
                      "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      **({"revision": revision} if revision else {})}
        write_json(cache / LOCK, lock)  # after each file, so an interrupted fetch keeps its records
    return lock


def check_format(path: Path) -> None:
    """Refuse a file whose bytes are not what its name says (a mirror's HTML error page saved
    as ``model.safetensors``): safetensors header, torch zip or pickle, JSON object."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        problem = None
        if head.lstrip()[:1] == b"<":
            problem = "an HTML/XML page (a mirror's error or login page?), not weights"
        elif path.suffix == ".safetensors":
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= size - 8:
                problem = "not a safetensors file (its 8-byte header length does not fit the file)"
            else:
                try:
                    header = json.loads(fh.read(n))
                    if not isinstance(header, dict) or not all(
                            isinstance(v, dict) and "dtype" in v for k, v in header.items() if k != "__metadata__"):
                        raise ValueError("entries without dtype")
                except (ValueError, UnicodeDecodeError):
                    problem = "not a safetensors file (its header is not a tensor table)"
        elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
            if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
                problem = "not a torch checkpoint (neither torch's zip format nor a pickle)"
        elif path.suffix == ".json":
            try:
                if not isinstance(json.loads(path.read_text()), dict):
                    problem = "JSON, but not an object"
            except (ValueError, UnicodeDecodeError):
                problem = "not valid JSON"
    if problem:
        raise CheckpointError(f"{path} is {problem}; it was removed. Check the source (or --base-url mirror) "
                              f"and fetch it again")


def _record_manual(ckpt: Checkpoint, target: Path, cache: Path) -> dict:
    if not target.is_file():
        raise CheckpointError(f"{target} is missing and cannot be downloaded by a script: get "
                              f"{ckpt.name} from {ckpt.manual}, put it at {target}, then run "
                              f"`noise2map weights fetch {ckpt.name} --cache {cache}` to record its SHA-256")
    try:
        check_format(target)
    except CheckpointError as err:  # the user's file: named, but left where they put it
        raise CheckpointError(str(err).replace("; it was removed.", "; it was left in place.")) from None
    digest = file_digest(target)
    if ckpt.sha256 and digest != ckpt.sha256:
        raise ChecksumError(f"{target} does not match the expected SHA-256 ({digest}, expected {ckpt.sha256})")
    return {"url": f"user-supplied ({ckpt.manual})", "sha256": digest, "bytes": target.stat().st_size,
            "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _recorded_digest(ckpt: Checkpoint, lock: dict) -> str | None:
    return ckpt.sha256 or lock.get(ckpt.name, {}).get("sha256")


def resolve(name: str, cache: str | Path) -> Path:
    """The verified cache path of a checkpoint; never downloads (runs are offline by design)."""
    ckpt, cache = get_checkpoint(name), Path(cache)
    path = cache / name
    fetch_cmd = f"noise2map weights fetch {name} --cache {cache}"
    if not path.is_file():
        raise CheckpointError(f"pretrained checkpoint {path} is missing ({ckpt.description}); "
                              f"fetch it with `{fetch_cmd}`, or set `weights: none` to train from scratch")
    expected = _recorded_digest(ckpt, read_lock(cache))
    if expected is None:
        raise CheckpointError(f"{path} has no recorded SHA-256 in {cache / LOCK}; fetch it with `{fetch_cmd}`")
    got = file_digest(path)
    if got != expected:
        raise ChecksumError(f"{path} does not match its recorded SHA-256 ({got}, expected {expected}); "
                            f"delete it and run `{fetch_cmd}`")
    return path


def load_into(module, path: str | Path) -> None:
    """Load a safetensors/torch state dict into ``module`` (or the timm model it wraps).

    A checkpoint that fits neither is an error naming the file and the first mismatching keys.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    errors = []
    for target in (module, getattr(module, "model", None)):
        if target is None:
            continue
        missing, unexpected = _key_mismatch(target, state)
        if not missing:
            # Only the keys the model has (a classifier head is dropped); no strict= kwarg, as
            # smp's encoders override load_state_dict without it.
            target.load_state_dict({k: v for k, v in state.items() if k not in unexpected})
            if unexpected:
                log.info("%s: ignored %d keys the model does not use (e.g. %s)", path.name, len(unexpected),
                         unexpected[0])
            return
        errors.append(f"{type(target).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    raise CheckpointError(f"{path} does not fit the model: " + " | ".join(errors))


def _key_mismatch(module, state: dict) -> tuple[list[str], list[str]]:
    own = module.state_dict()
    # Checkpoints older than BatchNorm's step counter lack it; it is bookkeeping, not weights.
    for key in own:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    return missing, unexpected


def export_released_backbone(backbone: str, cache: str | Path, output: str | Path, unet: dict | None = None) -> Path:
    """The released backbone's UNet as the state dict Noise2Map fine-tunes from (the same file
    the pipeline's own pretraining writes), after checking its config is the church layout
    (``unet``: overrides of it, for tests at a small size)."""
    import torch
    from safetensors.torch import load_file

    from noise2map.io import atomic_path, sha256
    from noise2map.models.noise2map import build_unet, check_unet_folder

    config_path, weights_path = (resolve(n, cache) for n in released_backbone_names(backbone))
    check_unet_folder(config_path.parent, unet)
    state = load_file(str(weights_path), device="cpu")
    unet = build_unet(unet)
    missing, unexpected = _key_mismatch(unet, state)
    if missing or unexpected:
        raise CheckpointError(f"{weights_path} does not fit the ddpm-church-256 UNet: {len(missing)} keys missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    unet.load_state_dict(state)
    output = Path(output)
    with atomic_path(output) as tmp:
        torch.save(unet.state_dict(), tmp)
    lock = read_lock(Path(cache))
    write_json(output.with_suffix(".json"), {
        "source": f"{RELEASED_REPO}/{backbone}", "revision": lock.get(REVISIONS, {}).get(RELEASED_REPO),
        "files": {p.name: sha256(p) for p in (config_path, weights_path)}})
    return output
