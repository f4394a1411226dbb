"""Multi-task Noise2Map (paper §V-D5): the shared model, its loss, and a run on synthetic WHU."""

import json

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from baselines.noise2map_models import DEMO_UNET
from noise2map.keyed_random import keyed_randint, sample_keys
from noise2map.models import Noise2Map, build_unet
from noise2map.models.multitask import TASKS, MultiTaskNoise2Map
from noise2map.training.multitask import MultiTaskTask, PairedTasks, multitask_run

pytestmark = pytest.mark.usefixtures("one_thread")
SCHEDULER = {"name": "ddim", "num_train_timesteps": 1000}
DEMO_UNET_PARAMS, PAPER_UNET_PARAMS = 280_755, 113_673_219
CONVS = {"ss_in": 3 * 3 * 9 + 3, "cd_in": 6 * 3 * 9 + 3, "out": 3 * 2 * 9 + 2}  # 84, 165, 56


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameters_are_one_unet_and_two_convs_per_task():
    assert CONVS == {"ss_in": 84, "cd_in": 165, "out": 56}
    demo = MultiTaskNoise2Map(unet=DEMO_UNET)
    assert _count(demo.unet) == DEMO_UNET_PARAMS
    assert _count(demo) == DEMO_UNET_PARAMS + 84 + 165 + 2 * 56 == 281_116
    assert _count(demo.task_view("cd")) == _count(demo)  # a view is the whole shared model
    assert _count(MultiTaskNoise2Map()) == PAPER_UNET_PARAMS + 84 + 165 + 2 * 56 == 113_673_580


def test_output_shapes_follow_the_input():
    model = MultiTaskNoise2Map(unet=DEMO_UNET)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 48, 40) * 2 - 1
    with torch.no_grad():
        assert model("ss", x).shape == model("cd", x, x).shape == (2, 2, 32, 32)
        assert model("cd", y, y).shape == model.task_view("ss")(y).shape == (2, 2, 48, 40)  # resampled
    with pytest.raises(Exception, match="task must be"):
        model("bcd", x)


def test_each_head_equals_a_single_task_noise2map_with_its_weights():
    torch.manual_seed(0)
    mt = MultiTaskNoise2Map(unet=DEMO_UNET, scheduler=SCHEDULER, ss_noise="gaussian")
    pretrained = build_unet(DEMO_UNET).state_dict()
    mt.load_pretrained_unet(pretrained)
    assert all(torch.equal(mt.unet.state_dict()[k], v) for k, v in pretrained.items())
    pre, post = torch.rand(3, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    t, keys = torch.tensor([0, 500, 999]), torch.tensor([11, 12, 13])
    for task, images in (("ss", (post,)), ("cd", (pre, post))):
        single = Noise2Map(task, unet=DEMO_UNET, scheduler=SCHEDULER, ss_noise="gaussian")
        single.unet.load_state_dict(mt.unet.state_dict())
        single.input_conv.load_state_dict(mt.input_convs[task].state_dict())
        single.output_conv.load_state_dict(mt.output_convs[task].state_dict())
        view = mt.task_view(task)
        assert view.timestep_conditioned and view.num_train_timesteps == single.num_train_timesteps == 1000
        with torch.no_grad():
            expected = single(*images, timesteps=t, noise_keys=keys)
            assert torch.equal(mt(task, *images, timesteps=t, noise_keys=keys), expected)
            assert torch.equal(view(*images, timesteps=t, noise_keys=keys), expected)
            outputs = []
            for model in (view, single):  # default t = T − 1; unkeyed SS noise from the global generator
                torch.manual_seed(5)
                outputs.append(model(*images))
            assert torch.equal(*outputs)


def test_pairs_cycle_the_smaller_data_set():
    pairs = PairedTasks(["s0", "s1", "s2"], ["c0", "c1", "c2", "c3", "c4"])
    assert len(pairs) == 5
    assert [pairs[i] for i in (0, 3, 4)] == [{"ss": "s0", "cd": "c0", "index": 0}, {"ss": "s0", "cd": "c3", "index": 3},
                                             {"ss": "s1", "cd": "c4", "index": 4}]
    assert len(PairedTasks(list(range(7)), list(range(2)))) == 7
    batch = torch.utils.data.default_collate([{"ss": {"image": torch.ones(2)}, "cd": {"pre": torch.zeros(2)},
                                               "index": i} for i in (3, 8)])
    assert batch["ss"]["image"].shape == (2, 2) and batch["index"].tolist() == [3, 8]
    with pytest.raises(ValueError, match="both tasks"):
        PairedTasks([], [1])


def _task(lambdas=(0.7, 1.3)):
    torch.manual_seed(0)
    module = MultiTaskTask("demo", {"scheduler": SCHEDULER, "ss_noise": "gaussian"},
                           {"ss": (1.0, 10.0), "cd": (1.0, 3.0)}, *lambdas, lr=1e-3)
    module.sample_seed, module.sample_epoch = 4, 1
    g = torch.Generator().manual_seed(1)

    def tiles(n):
        return torch.randint(0, 256, (n, 3, 3, 32, 32), generator=g, dtype=torch.uint8)

    masks = torch.randint(0, 2, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    (image,), (pre, post) = tiles(1), tiles(2)
    raw = {"ss": {"image": image, "mask": masks[0], "index": torch.tensor([0, 1, 2])},
           "cd": {"pre": pre, "post": post, "mask": masks[1], "index": torch.tensor([4, 0, 1])},
           "index": torch.tensor([7, 3, 12])}
    return module, module.on_after_batch_transfer(raw, 0)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_training_loss_is_the_lambda_weighted_sum_of_the_weighted_ce():
    module, batch = _task((0.7, 1.3))
    loss = module.training_step(batch, 0)
    expected, draws = 0.0, {}
    for task, images, lam, weight in (("ss", (batch["ss"]["image"],), 1.3, [1.0, 10.0]),
                                      ("cd", (batch["cd"]["pre"], batch["cd"]["post"]), 0.7, [1.0, 3.0])):
        assert images[0].dtype == torch.float32 and images[0].min() >= -1 and images[0].max() <= 1
        keys = sample_keys(4, 1, 2 * batch["index"] + TASKS.index(task))  # SS: 2i, CD: 2i + 1
        t = keyed_randint(keys, 1000)
        draws[task] = (keys, t)
        logits = module.model(task, *images, timesteps=t, noise_keys=keys)
        ce = F.cross_entropy(logits, batch[task]["mask"], weight=torch.tensor(weight))
        expected = expected + lam * ce
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6, rel=0)
    assert not torch.equal(draws["ss"][0], draws["cd"][0]) and not torch.equal(draws["ss"][1], draws["cd"][1])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_a_zero_lambda_leaves_that_heads_convs_without_gradient():
    module, batch = _task((0.0, 1.0))
    module.training_step(batch, 0).backward()
    for conv in (module.model.input_convs["cd"], module.model.output_convs["cd"]):
        assert all(p.grad is None or not p.grad.any() for p in conv.parameters())
    for conv in (module.model.input_convs["ss"], module.model.output_convs["ss"], module.model.unet.conv_in):
        assert all(p.grad is not None and p.grad.any() for p in conv.parameters())


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    from noise2map.reporting.ablations import ablation_config
    from noise2map.config import load_config, prepared_dir
    from noise2map.data import generate, prepare

    root = tmp_path_factory.mktemp("mt")
    config = load_config("workflow/config/demo.yaml")
    config.update(data_dir=str(root / "data"), results_dir=str(root / "results"), datasets=["whu"])
    config["ablations"]["max_epochs"] = 1
    raw = root / "data" / "raw"
    for raw_name, name, task in (("whu", "whu-ss", "ss"), ("whu-cd", "whu-cd", "cd")):
        generate(raw_name, raw, seed=0)
        prepare(name, raw, prepared_dir(config, "whu", task), config["tile_size"])
    return ablation_config(config, "multitask", "cd0p7ss1p3")  # half the scenes, 1 epoch


def test_a_run_scores_each_head_on_its_own_test_split(config, tmp_path):
    from noise2map.config import prepared_dir
    from noise2map.data import TileDataset

    run = tmp_path / "cd0p7ss1p3" / "seed0"
    metrics = multitask_run(config, (0.7, 1.3), 0, run)
    for task in TASKS:
        saved = json.loads((run / task / "metrics.json").read_text())
        assert saved == metrics[task]
        n_test = len(TileDataset(prepared_dir(config, "whu", task), "test"))
        assert saved["num_test_tiles"] == n_test == len(pd.read_csv(run / task / "tile_counts.csv"))
        assert saved["tp"] + saved["fp"] + saved["fn"] + saved["tn"] == n_test * 32 * 32
        assert (saved["task"], saved["model"], saved["model_key"], saved["dataset"]) == (
            task, "Noise2Map-MT", "noise2map-mt", "WHU")
        assert (saved["lambda_cd"], saved["lambda_ss"], saved["params_m"]) == (0.7, 1.3, 0.281)
        assert saved["selected_on"] == "test" and saved["checkpoint"].endswith("best.ckpt")
    assert (run / "checkpoints" / "best.ckpt").exists() and not (run / "checkpoints" / "last.ckpt").exists()
    log = pd.read_csv(run / "train_log" / "metrics.csv")
    assert log["train/loss_ss"].notna().any() and log["train/loss_cd"].notna().any()
    val = log.dropna(subset=["val/loss"]).iloc[-1]
    assert val["val/loss"] == pytest.approx(0.7 * val["val/loss_cd"] + 1.3 * val["val/loss_ss"], rel=1e-6)
    # determinism: the same run from scratch in another folder scores every tile the same
    again = multitask_run(config, (0.7, 1.3), 0, tmp_path / "again")
    for task in TASKS:
        assert pd.read_csv(run / task / "tile_counts.csv").equals(pd.read_csv(tmp_path / "again" / task / "tile_counts.csv"))
        assert {k: again[task][k] for k in ("tp", "fp", "fn", "tn")} == {k: metrics[task][k] for k in ("tp", "fp", "fn", "tn")}


def test_val_selection_carves_each_tasks_validation_from_its_own_training_split(config, tmp_path):
    from noise2map.config import prepared_dir

    run = tmp_path / "run"
    metrics = multitask_run({**config, "selection": "val"}, (1.0, 1.0), 0, run)
    for task in TASKS:
        held = pd.read_csv(run / task / "val_tiles.csv")["tile_id"]
        train = pd.read_csv(prepared_dir(config, "whu", task) / "train" / "tiles.csv")["tile_id"]
        assert 0 < len(held) < len(train) and set(held) <= set(train)
        assert metrics[task]["selection"] == "val" and metrics[task]["selected_on"] == "val-carve"


def test_a_killed_run_resumes_to_the_uninterrupted_result(config, tmp_path, monkeypatch):
    """A SIGUSR1 mid-epoch writes last.ckpt and exits; the rerun resumes the loader where it was
    and ends as a run never stopped. CD's 2 epochs win over SS's 1 (max_epochs of the tasks)."""
    import signal

    from noise2map.config import deep_merge
    from noise2map.training.seeding import ResumableEpochs, ResumableLoader

    # real accumulation: three batches an epoch (the released one keeps one of them)
    config = deep_merge(config, {"training": {"accumulation": "sum",
                                              "datasets": {"whu": {"cd": {"max_epochs": 2, "batch_size": 4}}}}})
    start = ResumableEpochs.on_train_epoch_start

    def signal_in_epoch_1(self, trainer, pl_module):
        start(self, trainer, pl_module)
        if trainer.current_epoch == 1:
            self.signalled = int(signal.SIGUSR1)  # as the handler does: stop at the next step

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    with monkeypatch.context() as patch:
        patch.setattr(ResumableEpochs, "on_train_epoch_start", signal_in_epoch_1)
        with pytest.raises(SystemExit):
            multitask_run(config, (1.0, 1.0), 0, killed)
    assert (killed / "checkpoints" / "last.ckpt").exists() and not (killed / "cd" / "metrics.json").exists()
    resumed = []
    load = ResumableLoader.load_state_dict
    monkeypatch.setattr(ResumableLoader, "load_state_dict", lambda self, state: (resumed.append(state), load(self, state)))
    multitask_run(config, (1.0, 1.0), 0, killed)
    assert resumed == [{"epoch": 1, "done": 2}]  # mid-epoch 1: two of its three batches done
    monkeypatch.undo()
    multitask_run(config, (1.0, 1.0), 0, whole)
    assert set(pd.read_csv(whole / "train_log" / "metrics.csv")["epoch"]) == {0, 1}
    for task in TASKS:
        assert pd.read_csv(killed / task / "tile_counts.csv").equals(pd.read_csv(whole / task / "tile_counts.csv"))
