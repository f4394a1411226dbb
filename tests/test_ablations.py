"""The ablation tables II–V and multi-task: variants, protocol, shared base runs, table builder,
and Table II's model without diffusion."""

import json

import pandas as pd
import pytest

import torch

from baselines import build_model, count_params
from noise2map.reporting.ablations import (BASE, PAPER_ABLATIONS, ablation_config, lambda_variant, lambdas_of, paper_setting,
                                 pretraining, run_of, run_paths, table_runs, variant_tasks, variants,
                                 write_ablation_table)
from noise2map.config import load_config
from noise2map.data.selection import scene_of, scene_subset
from noise2map.errors import UnknownNameError
from noise2map.evaluation.metrics import scores_from_counts


@pytest.fixture(scope="module")
def paper():
    return load_config()


def test_variants_override_only_their_setting(paper):
    t500 = ablation_config(paper, "table4", "T500")
    assert t500["noise2map"]["scheduler"] == {**paper["noise2map"]["scheduler"], "num_train_timesteps": 500}
    assert (t500["noise2map"]["val_timestep"], t500["noise2map"]["test_timestep"]) == (250, 499)
    heun = ablation_config(paper, "table5", "heun")
    assert heun["noise2map"]["scheduler"]["name"] == "heun" and heun["noise2map"]["test_timestep"] == 999
    # the protocol: WHU, half the training data, 100 epochs, for both tasks
    assert heun["training"]["train_fraction"] == 0.5
    assert heun["training"]["datasets"]["whu"]["ss"]["max_epochs"] == 100
    assert heun["training"]["datasets"]["whu"]["cd"]["class_weights"] == paper["training"]["datasets"]["whu"]["cd"]["class_weights"]
    with pytest.raises(UnknownNameError, match="T600"):
        ablation_config(paper, "table4", "T600")


def test_every_variant_has_the_papers_row(paper):
    rows = pd.read_csv(PAPER_ABLATIONS)
    for table, number in (("table2", "II"), ("table3", "III"), ("table4", "IV"), ("table5", "V"),
                          ("multitask", "MT")):
        settings = set(rows[rows.table == number].setting)
        ours = {paper_setting(table, v) for v in variants(paper)[table]}
        # Table II's extra row (the SS noise of the paper text) and Table III's released backbones
        # (each read against the paper's row of its sample) are the rows the paper lacks
        extra = {"table2": {"with diffusion, SS noise: Gaussian (paper text)"},
                 "table3": {f"pretraining: {s} (released backbone)" for s in
                            ("AID 10k", "ImageNet 10k", "MAJOR-TOM Sentinel-2 10k", "ddpm-church-256 only")}}
        assert ours - settings == extra.get(table, set())
        assert settings <= ours
    assert len(run_paths(paper, "results", "table5")) == 4 * 2 * len(paper["seeds"])


def test_variants_equal_to_the_preset_share_one_base_run(paper):
    # paper preset: DDIM, T = 1000, AID pretraining, image SS noise, diffusion on
    base_rows = {(t, v) for t, vs in variants(paper).items() for v in vs if run_of(paper, t, v) == BASE}
    assert base_rows == {("table2", "diffusion"), ("table3", "aid"), ("table4", "T1000"), ("table5", "ddim"),
                         ("multitask", "single")}
    assert run_of(paper, "table3", "scratch") == ("table3", "scratch")  # same config, no pretraining
    assert pretraining(paper, "table3", "scratch") is None and pretraining(paper, "table3", "majortom") == "majortom"
    assert run_of(paper, "table3", "releasedaid10k") == ("table3", "releasedaid10k")  # same config, other UNet
    assert ablation_config(paper, "table3", "imagenet")["pretrain"]["dataset"] == "imagenet"
    runs = dict(table_runs(paper, "r", "table2"))
    assert [v for v, _ in table_runs(paper, "r", "table2")] == ["diffusion", "diffusion", "nodiffusion",
                                                                "nodiffusion", "ssgaussian"]
    assert runs["diffusion"].startswith("r/ablations/base/preset/")
    assert runs["ssgaussian"] == "r/ablations/table2/ssgaussian/ss/seed0/metrics.json"
    assert variant_tasks(paper, "table2", "ssgaussian") == ["ss"]
    assert ablation_config(paper, "table2", "nodiffusion")["noise2map"]["diffusion"] is False
    mt = [p for v, p in table_runs(paper, "r", "multitask") if v != "single"]
    assert mt == [f"r/ablations/multitask/{v}/seed0/{t}/metrics.json"
                  for v in ("cd1ss1", "cd0p5ss0p5", "cd0p7ss1p3") for t in ("ss", "cd")]
    # a preset with the paper text's SS noise gets the released code's as the extra row
    gaussian = {**paper, "noise2map": {**paper["noise2map"], "ss_noise": "gaussian"}}
    assert "ssimage" in variants(gaussian)["table2"]


def test_lambda_variant_names_round_trip():
    assert lambda_variant(0.7, 1.3) == "cd0p7ss1p3" and lambdas_of("cd0p7ss1p3") == (0.7, 1.3)
    assert lambdas_of(lambda_variant(1, 1)) == (1.0, 1.0)
    assert paper_setting("multitask", "cd0p5ss0p5") == "multi-task lambda_cd=0.5 lambda_ss=0.5"
    with pytest.raises(UnknownNameError):
        lambdas_of("half")


def test_without_diffusion_drops_exactly_the_time_embedding():
    full, plain = build_model("noise2map-cd", "paper"), build_model("noise2map-cd", "paper", diffusion=False)
    time_params = sum(v.numel() for k, v in full.unet.state_dict().items() if "time_emb" in k)
    assert time_params == 5_450_496  # time MLP (128→512→512) + every residual block's projection
    assert sum(p.numel() for p in plain.parameters()) == count_params("noise2map-cd") - time_params == 108_222_944
    assert not plain.timestep_conditioned and full.timestep_conditioned


def test_without_diffusion_sees_the_clean_pair_and_no_timestep():
    torch.manual_seed(0)
    full = build_model("noise2map-cd", "demo")
    plain = build_model("noise2map-cd", "demo", diffusion=False)
    plain.load_pretrained_unet(full.unet.state_dict())  # the time weights are skipped, the rest copied
    plain.input_conv.load_state_dict(full.input_conv.state_dict())
    plain.output_conv.load_state_dict(full.output_conv.state_dict())
    assert torch.equal(plain.unet.conv_in.weight, full.unet.conv_in.weight)
    pre, post = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    plain.eval()
    with torch.no_grad():
        out = plain(pre, post)
        h = plain.input_conv(torch.cat([pre, post], 1))  # no noising: the clean [pre, post]
        expected = plain.output_conv(plain.unet(h, 999).sample)
        assert torch.equal(out, expected)
        # the timestep has no path into the network any more
        assert torch.equal(plain.unet(h, 0).sample, plain.unet(h, 999).sample)
        assert not torch.equal(full.unet(h, 0).sample, full.unet(h, 999).sample)


def test_half_the_training_scenes():
    sources = [f"spacenet7/train/L15-{a}/images_masked/m{m}.tif" for a in range(6) for m in range(10)]
    keep = scene_subset(sources, 0.5, seed=2)
    assert len(keep) == 30 and len({scene_of(sources[i]) for i in keep}) == 3
    assert scene_subset(sources, 0.5, seed=2) == keep and scene_subset(sources, 1.0, seed=0) == list(range(60))


def test_table_has_seed_means_paper_values_and_differences(tmp_path):
    paths = []
    for variant, task, seed, counts in (("T500", "cd", 0, (40, 10, 10, 940)), ("T500", "cd", 1, (30, 10, 20, 940)),
                                        ("T1000", "cd", 0, (45, 5, 5, 945))):
        run = tmp_path / "ablations" / "table4" / variant / task / f"seed{seed}"
        run.mkdir(parents=True)
        row = {"task": task, "model": "Noise2Map-CD", "dataset": "WHU", "seed": seed, "preset": "t",
               "tp": counts[0], "fp": counts[1], "fn": counts[2], "tn": counts[3], **scores_from_counts(*counts)}
        (run / "metrics.json").write_text(json.dumps(row))
        paths.append(run / "metrics.json")
    rows = write_ablation_table("table4", paths, tmp_path / "table4.csv").set_index("variant")
    f1s = [scores_from_counts(40, 10, 10, 940)["f1"], scores_from_counts(30, 10, 20, 940)["f1"]]
    assert rows.loc["T500", "f1"] == pytest.approx(sum(f1s) / 2) and rows.loc["T500", "n_seeds"] == 2
    assert rows.loc["T500", "paper_f1"] == 82.52 and rows.loc["T1000", "paper_f1"] == 82.92
    assert rows.loc["T1000", "delta_f1"] == pytest.approx(scores_from_counts(45, 5, 5, 945)["f1"] - 82.92)
    md = (tmp_path / "table4.md").read_text()
    assert "# Table IV" in md and f"({82.52:.2f}, {rows.loc['T500', 'delta_f1']:+.2f})" in md


def test_rows_from_the_shared_base_run_and_degenerate_flags(tmp_path):
    def run(path, counts, seed=0):
        path.mkdir(parents=True)
        row = {"task": "cd", "model": "Noise2Map-CD", "dataset": "WHU", "seed": seed, "preset": "t",
               "tp": counts[0], "fp": counts[1], "fn": counts[2], "tn": counts[3], **scores_from_counts(*counts)}
        (path / "metrics.json").write_text(json.dumps(row))
        return path / "metrics.json"

    base = run(tmp_path / "ablations/base/preset/cd/seed0", (45, 5, 5, 945))
    plain = run(tmp_path / "ablations/table2/nodiffusion/cd/seed0", (0, 0, 50, 950))  # never finds a change
    rows = write_ablation_table("table2", [base, plain], tmp_path / "table2.csv",
                                variant_of=["diffusion", "nodiffusion"]).set_index("variant")
    assert rows.loc["diffusion", "setting"] == "with diffusion" and rows.loc["diffusion", "paper_f1"] == 82.92
    assert rows.loc["nodiffusion", "paper_f1"] == 78.72
    assert rows.loc["nodiffusion", "f1"] == pytest.approx(scores_from_counts(0, 0, 50, 950)["f1"])
    assert list(rows["degenerate"]) == [False, True]
    md = (tmp_path / "table2.md").read_text()
    assert "| without diffusion (no noising, no timestep embedding) | " in md and " ⚠ (78.72" in md
    with pytest.raises(ValueError, match="1 variant names for 2"):
        write_ablation_table("table2", [base, plain], tmp_path / "x.csv", variant_of=["diffusion"])


def test_table3_released_rows_fine_tune_the_published_backbones(paper):
    from noise2map.reporting.ablations import build_ablation_table, pretrained_unet
    from noise2map.config import deep_merge

    assert pretrained_unet(paper, "table3", "releasedsat2gen") == "results/pretrain/released/sat2gen/noise2map_unet.pt"
    assert pretrained_unet(paper, "table3", "majortom") == "results/pretrain/majortom/noise2map_unet.pt"
    assert pretrained_unet(paper, "table3", "scratch") is None
    assert pretrained_unet(paper, "table2", "nodiffusion") == "results/pretrain/aid/noise2map_unet.pt"
    # with source: released the base run fine-tunes the release, so Table III's AID row (ours)
    # no longer shares it, and the released AID row does
    released = deep_merge(paper, {"pretrain": {"source": "released"}})
    assert run_of(released, "table3", "aid") == ("table3", "aid")
    assert run_of(released, "table3", "releasedaid10k") == BASE
    assert pretrained_unet(released, "table4", "T500") == "results/pretrain/released/aid-10k/noise2map_unet.pt"
    # only the listed backbones get rows
    some = deep_merge(paper, {"ablations": {"released_backbones": ["imagenet2gen"]}})
    assert [v for v in variants(some)["table3"] if v.startswith("released")] == ["releasedimagenet2gen"]
    # each released row is read against the paper's row of its sample
    metrics = pd.DataFrame({"task": ["ss", "ss"], "seed": [0, 0], "f1": [80.0, 90.0], "iou": [70.0, 80.0],
                            "recall_pos": [50.0, 60.0], "tp": [1, 2], "fp": [1, 1], "fn": [1, 1], "tn": [9, 9]})
    rows = build_ablation_table("table3", metrics, ["releasedimagenet2gen", "releasedddpmchurch"])
    assert rows["setting"].tolist() == ["pretraining: ImageNet 10k (released backbone)",
                                        "pretraining: ddpm-church-256 only (released backbone)"]
    assert rows["paper_f1"].iloc[0] == pytest.approx(82.11) and pd.isna(rows["paper_f1"].iloc[1])
    assert rows["delta_f1"].iloc[0] == pytest.approx(80.0 - 82.11)


def _runs(rows):
    """Ablation metrics of (variant, task, seed, tp, fp, fn, tn) rows."""
    frame = pd.DataFrame(rows, columns=["variant", "task", "seed", "tp", "fp", "fn", "tn"])
    scores = pd.DataFrame([scores_from_counts(*r) for r in frame[["tp", "fp", "fn", "tn"]].to_numpy()])
    return frame.join(scores)


def test_identical_settings_are_stated_only_when_their_counts_are():
    from noise2map.reporting.ablations import ablation_markdown, build_ablation_table

    same = [(v, t, s, 5 + s, 2, 3, 90 - s) for v in ("ddim", "ddpm", "pndm") for t in ("ss", "cd") for s in (0, 1)]
    heun = [("heun", t, s, 1, 9, 7, 83) for t in ("ss", "cd") for s in (0, 1)]
    runs = _runs(same + heun)
    rows = build_ablation_table("table5", runs.drop(columns="variant"), list(runs["variant"]))
    md = ablation_markdown("table5", rows, "test")
    assert rows.set_index(["variant", "task"]).loc[("ddpm", "cd"), "same_counts_as"] == "scheduler DDIM = scheduler PNDM"
    assert rows.set_index(["variant", "task"]).loc[("heun", "ss"), "same_counts_as"] == ""
    assert ("Identical confusion counts in every seed (the same model): SS: scheduler DDIM = scheduler DDPM = "
            "scheduler PNDM; CD: scheduler DDIM = scheduler DDPM = scheduler PNDM.") in md
    # one count off in one seed of one task: that task no longer claims DDPM equals the others
    changed = [r if r[:3] != ("ddpm", "cd", 1) else (*r[:3], r[3] + 1, r[4], r[5] - 1, r[6]) for r in same]
    runs = _runs(changed + heun)
    md = ablation_markdown("table5", build_ablation_table("table5", runs.drop(columns="variant"),
                                                          list(runs["variant"])), "test")
    assert "CD: scheduler DDIM = scheduler PNDM." in md and "SS: scheduler DDIM = scheduler DDPM = scheduler PNDM" in md
    distinct = _runs([(v, "ss", 0, 5 + i, 2, 3, 90 - i) for i, v in enumerate(("ddim", "ddpm", "pndm", "heun"))])
    md = ablation_markdown("table5", build_ablation_table("table5", distinct.drop(columns="variant"),
                                                          list(distinct["variant"])), "test")
    assert "No two settings of a task have identical confusion counts in every seed." in md
    assert "identical for one seed" not in md


def test_ablation_rows_carry_the_fingerprints_of_their_runs():
    from noise2map.reporting.ablations import build_ablation_table

    runs = _runs([("ddim", "ss", 0, 5, 2, 3, 90), ("ddim", "ss", 1, 6, 2, 3, 89), ("heun", "ss", 0, 1, 9, 7, 83)])
    runs["fingerprint"] = ["aaaa", "bbbb", "cccc"]
    rows = build_ablation_table("table5", runs.drop(columns="variant"), list(runs["variant"]))
    assert rows.set_index("variant")["fingerprints"].to_dict() == {"ddim": "aaaa;bbbb", "heun": "cccc"}
