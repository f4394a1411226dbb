"""Fidelity-ledger rows backed by behaviour (``noise2map/reporting/fidelity.py``): each rule of
the released code (alishibli97/noise2map @ 731e9f1) is written here as a small reference from
its public source, run beside the suite's code on the same input under the paper preset, and
the two must agree in numbers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from noise2map.config import evaluation_split, load_config, preparation_options, prepared_dir, task_settings

PAPER = "workflow/config/paper.yaml"
DEMO = "workflow/config/demo.yaml"

# configs/<dataset>_<sem|cd>.yaml of the release: batch_size, num_epochs, val_period, change_weight,
# no_change_weight (spacenet7_sem L15-23, spacenet7_cd L16-23, whu_sem/whu_cd L14-22, xview2_* L14-21)
RELEASE_YAML = {("spacenet7", "ss"): (8, 200, 5, 5.0, 1.0), ("spacenet7", "cd"): (8, 200, 5, 3.0, 1.0),
                ("whu", "ss"): (8, 200, 5, 10.0, 1.0), ("whu", "cd"): (8, 500, 1, 1.0, 1.0),
                ("xview2", "ss"): (4, 200, 5, 3.0, 1.0), ("xview2", "cd"): (2, 200, 5, 3.0, 1.0)}


@pytest.fixture(scope="module")
def paper():
    return load_config(PAPER)


# ---------------------------------------------------------------------------------------------
# the release's rules, from its source
def release_weighted_ce_loss(logits, target, change_weight, no_change_weight):
    """train.py L126-136."""
    target = target.squeeze(1).long()
    weights = torch.tensor([no_change_weight, change_weight], dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, target, weight=weights)


def release_noised(task: str, images, t):
    """train.py L155-167 / L194-206, evaluate.py L54-64: DDIMScheduler() defaults, CD noise =
    the reversed pair, SS noise = the image."""
    from diffusers import DDIMScheduler

    x, noise = (torch.cat(images, 1), torch.cat(images[::-1], 1)) if task == "cd" else (images[0], images[0])
    return DDIMScheduler().add_noise(x, noise, t)


def release_forward(model, x, t):
    """noise2map/model.py L138-150 at img_scale 256 (no resampling; here the demo UNet's size)."""
    return model.output_conv(model.unet(model.input_conv(x), t).sample)


def release_split(dataset: str) -> str:
    """evaluate.py L125 (train.py L246 validates on the same split)."""
    return "val" if dataset == "spacenet7" else "test"


# ---------------------------------------------------------------------------------------------
def test_class_weighted_loss_of_every_paper_task_is_the_released_weighted_ce_loss(paper):
    from noise2map.training.tasks import DiscriminativeTask

    g = torch.Generator().manual_seed(0)
    logits, mask = torch.randn(2, 2, 8, 8, generator=g), torch.randint(0, 2, (2, 8, 8), generator=g)
    for (dataset, task), (*_, change, no_change) in RELEASE_YAML.items():
        module = DiscriminativeTask(f"noise2map-{task}", task, "demo",
                                    class_weights=task_settings(paper, dataset, task)["class_weights"])
        module.forward = lambda batch, stage: logits  # the training step's own loss on fixed logits
        module.log = lambda *args, **kwargs: None
        ours = module.training_step({"mask": mask}, 0)
        released = release_weighted_ce_loss(logits, mask[:, None], change, no_change)
        assert ours.item() == pytest.approx(released.item(), rel=1e-6), (dataset, task)
        if change != no_change:  # teeth: the weights the other way round give another loss
            assert abs(release_weighted_ce_loss(logits, mask[:, None], no_change, change) - ours) > 1e-3


class _Toy(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w, self.validated = nn.Parameter(torch.zeros(1)), []

    def training_step(self, batch, batch_idx):
        return ((self.w - batch.mean()) ** 2).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.validated.append(self.current_epoch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_validated_epochs_of_every_paper_task_are_the_released_loops(paper, tmp_path):
    from noise2map.training.run import _fit_trainer
    from noise2map.training.schedule import validation_epochs

    schedule = paper["training"]["val_schedule"]
    for (dataset, task), (_, num_epochs, val_period, *_) in RELEASE_YAML.items():
        s = task_settings(paper, dataset, task)
        released = [epoch for epoch in range(num_epochs) if epoch % val_period == 0]  # train.py L293, L316
        assert validation_epochs(s["max_epochs"], s["val_every_n_epochs"], schedule) == released, (dataset, task)
        if (dataset, task) in (("whu", "cd"), ("whu", "ss")):  # the run's Trainer, its first 11 epochs
            toy, data = _Toy(), torch.utils.data.DataLoader(torch.arange(4.0).view(2, 2), batch_size=1)
            config = {"training": {**paper["training"], "accelerator": "cpu", "devices": 1, "grad_accumulation": 1,
                                   "accumulation": "sum", "logger": "csv"}}
            _fit_trainer(config, tmp_path / task, 11, val_every=s["val_every_n_epochs"], enable_progress_bar=False,
                         enable_checkpointing=False, num_sanity_val_steps=0).fit(toy, data, data)
            assert toy.validated == [e for e in released if e < 11]


def test_paper_training_batches_of_every_task_are_the_released_dataloaders(paper):
    from noise2map.training.run import _train_loader
    from noise2map.training.schedule import model_last_batch

    one = SimpleNamespace(global_rank=0, world_size=1)
    for (dataset, task), (batch_size, *_) in RELEASE_YAML.items():
        size = task_settings(paper, dataset, task)["batch_size"]
        for n in (3 * batch_size, 3 * batch_size + 1):  # whole batches; a last batch of one
            # train.py L249-254: DataLoader(batch_size, shuffle=True), no drop_last (order aside)
            released = [len(b) for b in torch.utils.data.DataLoader(list(range(n)), batch_size=batch_size)]
            loader = _train_loader(list(range(n)), size, 0, 7, one, 1, model_last_batch(paper, f"noise2map-{task}"))
            ours = [b.tolist() for b in loader]
            assert [len(b) for b in ours] == released, (dataset, task, n)
            assert sorted(i for b in ours for i in b) == list(range(n))


@pytest.mark.parametrize("task", ["ss", "cd"])
def test_paper_noise2map_validation_and_test_logits_are_the_released_validate_and_evaluate(paper, task):
    from diffusers import DDIMScheduler

    from noise2map.training.run import model_options
    from noise2map.training.tasks import DiscriminativeTask

    key, n2m = f"noise2map-{task}", paper["noise2map"]
    torch.manual_seed(0)
    module = DiscriminativeTask(key, task, "demo", model_options(paper, key), val_timestep=n2m["val_timestep"],
                                test_timestep=n2m["test_timestep"]).eval()
    images = tuple(torch.rand(2, 3, 32, 32) * 2 - 1 for _ in range(2 if task == "cd" else 1))
    batch = {**dict(zip(("pre", "post") if task == "cd" else ("image",), images)), "index": torch.tensor([3, 8])}
    T = DDIMScheduler().config.num_train_timesteps
    with torch.no_grad():
        for stage, t in (("val", T // 2), ("test", T - 1)):  # train.py L204, evaluate.py L51
            t = torch.full((2,), t, dtype=torch.long)
            want = release_forward(module.model, release_noised(task, images, t), t)
            assert (module(batch, stage) - want).abs().max().item() < 1e-5, stage
        assert (module(batch, "val") - module(batch, "test")).abs().max() > 1e-4  # teeth: t matters


def test_xview2_cd_keeps_a_pair_whose_mask_is_empty_as_the_released_xview2_cd_py(tmp_path):
    from noise2map.data import prepare
    from noise2map.data.preparers import xview2 as xv2

    rng, size, t = np.random.default_rng(0), 64, 32
    boxes = {"train": {"00000001": [(8, 8, 30, 24)], "00000125": [(30, 30, 50, 44)],  # 125: in _MISSING
                       "00000002": [(20, 20, 24, 24)], "00000003": []},  # 2: one tiny building; 3: none
             "test": {"00000004": [(10, 12, 40, 30)], "00000005": [(40, 40, 44, 44)]}}
    raw = tmp_path / "raw" / "xview2"
    for split, pairs in boxes.items():
        for sub in ("images", "labels"):
            (raw / split / sub).mkdir(parents=True)
        for xid, rects in pairs.items():
            for kind in ("pre", "post"):
                stem = f"santa-rosa-wildfire_{xid}_{kind}_disaster"
                image = Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8))
                image.save(raw / split / "images" / f"{stem}.png")
                feats = [{"properties": {"feature_type": "building", "uid": f"{xid}-{k}",
                                         **({"subtype": "destroyed"} if kind == "post" else {})},
                          "wkt": f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"}
                         for k, (x0, y0, x1, y1) in enumerate(rects)]
                (raw / split / "labels" / f"{stem}.json").write_text(json.dumps(
                    {"features": {"xy": feats, "lng_lat": []}, "metadata": {"width": size, "height": size}}))
    options = preparation_options(load_config(PAPER), "xview2-cd")
    assert options["pairs"] == "keep_all"
    prepare("xview2-cd", tmp_path / "raw", tmp_path / "p", t, options=options)
    dropping = prepare("xview2-cd", tmp_path / "raw", tmp_path / "d", t, options={**options, "pairs": "drop_empty"})
    missing = {"train": {"00000334", "00000192", "00000125", "00000247", "00000327", "00000258", "00000320"},
               "test": {"00000087", "00000289"}}
    for split in boxes:
        # masks/ as mask_polygons.py writes it (xv2.footprint_mask: that script's rule, equal to it in
        # test_release_data_rules.py); xview2_cd.py L54-58 keeps a pre image when masks/<name> exists
        # (the _MISSING test compares the disaster name: dead code), L93-100 reads its label
        masks = {f: xv2.footprint_mask(raw / split / "labels" / f"{f.stem}.json", (size, size), options["border"])
                 for f in sorted((raw / split / "images").glob("*_pre_disaster.png"))}
        kept = [f for f, m in masks.items() if f.stem.split("_")[0] not in missing[split] and m is not None]
        labels = [np.where(cv2.resize(masks[f], (t, t)) / 255.0 > 0.5, 1, 0) for f in kept]
        ids = pd.read_csv(tmp_path / "p" / split / "tiles.csv")["tile_id"].tolist()
        assert ids == [f.stem.removesuffix("_pre_disaster") for f in kept]
        assert np.array_equal(np.load(tmp_path / "p" / split / "labels.npy"), np.stack(labels))
        assert any(not lab.any() for lab in labels)  # the release trains and scores an empty-mask pair
    assert dropping["dropped"] == {"train": 1, "test": 1}  # teeth: drop_empty removes exactly those


class _ReleasedWrapper(nn.Module):
    """noise2map/model.py L95-97 (at the demo UNet's size)."""

    def __init__(self, in_channels: int):
        super().__init__()
        from diffusers import UNet2DModel

        from baselines.noise2map_models import DEMO_UNET
        from noise2map.models.noise2map import church_config

        self.unet = UNet2DModel.from_config({**church_config(), **DEMO_UNET})
        self.input_conv = nn.Conv2d(in_channels, 3, 3, padding=1)
        self.output_conv = nn.Conv2d(3, 2, 3, padding=1)


def test_a_released_spacenet7_checkpoint_is_scored_on_the_split_evaluate_py_scores(paper, tmp_path):
    from noise2map.data import TileDataset, generate, prepare
    from noise2map.evaluation.metrics import tile_counts
    from noise2map.training.released import import_released

    assert {d: evaluation_split(paper, d) for d in ("spacenet7", "whu", "xview2")} == {
        d: release_split(d) for d in ("spacenet7", "whu", "xview2")}
    config = load_config(DEMO)
    config.update(data_dir=str(tmp_path / "data"), results_dir=str(tmp_path / "results"), datasets=["spacenet7"])
    config["training"]["evaluation_split"] = paper["training"]["evaluation_split"]
    generate("spacenet7", tmp_path / "data" / "raw", seed=0)
    store = prepared_dir(config, "spacenet7", "cd")
    prepare("spacenet7-cd", tmp_path / "data" / "raw", store, config["tile_size"])
    torch.manual_seed(3)
    model = _ReleasedWrapper(6).eval()
    torch.save(model.state_dict(), tmp_path / "best_model_epoch_5.pth")
    metrics = import_released(tmp_path / "best_model_epoch_5.pth", config, "cd", "spacenet7", tmp_path / "run")
    scored = TileDataset(store, release_split("spacenet7"))
    t = torch.tensor([999])
    with torch.no_grad():
        noised = (release_noised("cd", (i["pre"][None], i["post"][None]), t) for i in scored)
        want = torch.cat([tile_counts(release_forward(model, x, t), i["mask"][None].long())
                          for x, i in zip(noised, scored)])
    counts = pd.read_csv(tmp_path / "run" / "tile_counts.csv")
    assert metrics["evaluated_on"] == "val" and list(counts["tile_id"]) == list(scored.tile_ids)
    assert counts[["tp", "fp", "fn", "tn"]].to_numpy().tolist() == want.tolist()
