"""A checkpoint of the released train.py (its Noise2Map wrapper's state dict, under
DataParallel's ``module.`` prefix or plain) becomes a scored run folder and a Table I row."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import whu_cd_demo_store
from torch import nn

from noise2map.config import prepared_dir
from noise2map.data import TileDataset
from noise2map.errors import CheckpointError
from noise2map.evaluation.metrics import tile_counts
from noise2map.models.noise2map import church_config
from noise2map.training.released import import_released, released_state_dict


class Released(nn.Module):
    """The released noise2map/model.py wrapper at img_scale 256 (at the demo UNet's size)."""

    def __init__(self, in_channels: int):
        super().__init__()
        from diffusers import UNet2DModel

        from baselines.noise2map_models import DEMO_UNET

        self.unet = UNet2DModel.from_config({**church_config(), **DEMO_UNET})
        self.input_conv = nn.Conv2d(in_channels, 3, 3, padding=1)
        self.output_conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x, t):
        return self.output_conv(self.unet(self.input_conv(x), t).sample)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    config = whu_cd_demo_store(root)
    torch.manual_seed(3)
    model = Released(6).eval()
    ckpt = root / "best_model_epoch_37.pth"
    torch.save(nn.DataParallel(model).state_dict(), ckpt)  # keys "module.input_conv.weight", ...
    return root, config, model, ckpt


def _released_counts(model, store) -> torch.Tensor:
    """evaluate.py: t = T - 1, DDIMScheduler().add_noise(cat(pre, post), cat(post, pre), t)."""
    from diffusers import DDIMScheduler

    test = TileDataset(store, "test")
    rows = []
    with torch.no_grad():
        for item in test:
            pre, post, mask = item["pre"][None], item["post"][None], item["mask"][None].long()
            t = torch.tensor([999])
            x = DDIMScheduler().add_noise(torch.cat([pre, post], 1), torch.cat([post, pre], 1), t)
            rows.append(tile_counts(model(x, t), mask))
    return torch.cat(rows)


def test_released_checkpoint_becomes_a_scored_run_folder(setup):
    root, config, model, ckpt = setup
    run = root / "results" / "runs" / "cd" / "whu" / "noise2map-cd-released" / "seed0"
    metrics = import_released(ckpt, config, "cd", "whu", run)
    counts = pd.read_csv(run / "tile_counts.csv")
    test = TileDataset(prepared_dir(config, "whu", "cd"), "test")
    assert list(counts["tile_id"]) == list(test.tile_ids)  # every tile once, in order
    expected = _released_counts(model, prepared_dir(config, "whu", "cd"))
    assert counts[["tp", "fp", "fn", "tn"]].to_numpy().tolist() == expected.tolist()
    assert metrics["model"] == "Noise2Map-CD (released checkpoint)" and metrics["num_test_tiles"] == len(test)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["tp"] == int(expected[:, 0].sum()) and saved["evaluated_on"] == "test"
    resolved = (run / "config.yaml").read_text()
    assert "imported_epoch: 37" in resolved and "imported_sha256:" in resolved


def test_the_imported_run_is_a_table_i_row(setup, tmp_path):
    root, config, _, ckpt = setup
    run = tmp_path / "run"
    import_released(ckpt, config, "cd", "whu", run)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(__import__("yaml").safe_dump(config))
    out = tmp_path / "table1.csv"
    done = subprocess.run([sys.executable, "-m", "noise2map.cli", "tables", "table1", "--output", str(out),
                           "--resamples", "10", str(run / "metrics.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(out)
    assert table["model"].tolist() == ["Noise2Map-CD (released checkpoint)"] and table["evaluated_on"][0] == "test"


def test_plain_and_prefixed_state_dicts_load_alike(setup, tmp_path):
    _, _, model, ckpt = setup
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    a, b = released_state_dict(ckpt), released_state_dict(tmp_path / "plain.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "input_conv.weight" in a and not any(k.startswith("module.") for k in a)


def test_a_wrong_checkpoint_is_named(setup, tmp_path):
    root, config, model, _ = setup
    torch.save(Released(3).state_dict(), tmp_path / "ss.pth")
    with pytest.raises(CheckpointError, match=r"input_conv.weight has shape \(3, 3, 3, 3\).*SS checkpoint has 3"):
        import_released(tmp_path / "ss.pth", config, "cd", "whu", tmp_path / "r1")
    scaled = {**model.state_dict(), "input_upscaling.1.weight": torch.zeros(3, 3, 3, 3)}
    torch.save(scaled, tmp_path / "scaled.pth")
    with pytest.raises(CheckpointError, match="img_scale != 256"):
        released_state_dict(tmp_path / "scaled.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth: not a state dict torch can read"):
        released_state_dict(tmp_path / "junk.pth")
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("output_conv")}, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="2 keys missing"):
        import_released(tmp_path / "cut.pth", config, "cd", "whu", tmp_path / "r2")
