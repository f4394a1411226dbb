"""The benchmark commands (bench loader / train / infer): CI-sized smoke runs and their helpers.

No timing is asserted: figures are checked for structure and internal consistency only.
"""

import io
import json
from contextlib import redirect_stdout

import numpy as np
import pytest
import rasterio
import torch

from noise2map.bench import loader, train
from noise2map.cli import main
from noise2map.data import TileDataset


def run_cli(*argv):
    out = io.StringIO()
    with redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


def read_report(path):
    assert path.with_suffix(".md").is_file()
    result = json.loads(path.read_text())
    for key in ("machine", "versions", "settings"):
        assert result[key]
    assert result["machine"]["torch_threads"] >= 1 and result["versions"]["torch"] == torch.__version__
    return result


# ---------------------------------------------------------------------------------------------
# loader


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    pairs = loader.write_mosaics(root / "raw", 2, size=96, seed=1)
    store = TileDataset(loader.build_store(root / "store", pairs, root / "raw", tile=32), "train")
    return pairs, store


def test_store_holds_the_mosaic_grid_and_reads_like_the_geotiff(small_sources):
    pairs, store = small_sources
    assert len(store) == 2 * 9 and store.task == "ss" and store.tile_size == 32
    with rasterio.open(pairs[1][0]) as src:
        mosaic = np.moveaxis(src.read(), 0, -1)
    with rasterio.open(pairs[1][1]) as src:
        label = src.read(1)
    images = np.load(store.root / "train" / "images.npy")
    row = store.tiles[9 + 5]  # second mosaic, tile (1, 2)
    assert (row["tile_id"].endswith("_r1_c2"), int(row["row"]), int(row["col"])) == (True, 32, 64)
    assert np.array_equal(images[14], mosaic[32:64, 64:96])
    geotiff = loader.GeoTiffCropDataset(pairs, loader.store_windows(store, pairs), tile=32)
    assert geotiff.windows[14] == (1, 32, 64)
    a, b = store[14], geotiff[14]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert torch.equal(b["mask"], torch.from_numpy(label[32:64, 64:96].astype(np.int64)))
    assert torch.equal(b["image"], torch.from_numpy(mosaic[32:64, 64:96]).permute(2, 0, 1).float() / 127.5 - 1)
    assert loader.check_equal(store, geotiff, range(len(store))) == len(store)


def test_check_equal_catches_a_wrong_window(small_sources):
    pairs, store = small_sources
    windows = loader.store_windows(store, pairs)
    windows[3] = (windows[3][0], windows[3][1], windows[3][2] + 1)
    with pytest.raises(AssertionError, match="tile 3"):
        loader.check_equal(store, loader.GeoTiffCropDataset(pairs, windows, tile=32), [3])


def test_uint8_store_items_scale_to_the_float_items(small_sources):
    from noise2map.data import TileDataset
    from noise2map.data.store import to_model_input

    pairs, store = small_sources
    raw = TileDataset(store.root, "train", uint8=True)[4]
    assert raw["image"].dtype == torch.uint8 and raw["mask"].dtype == torch.uint8
    assert raw["image"].shape == store[4]["image"].shape
    assert torch.equal(to_model_input(raw["image"]), store[4]["image"])
    assert torch.equal(raw["mask"].long(), store[4]["mask"])


def test_random_windows_stay_inside_the_mosaics():
    windows = loader.random_windows(3, 200, size=96, tile=32, seed=0)
    assert len(windows) == 200 and {k for k, _, _ in windows} == {0, 1, 2}
    assert all(0 <= r <= 64 and 0 <= c <= 64 for _, r, c in windows)


def test_bench_loader_command(tmp_path):
    out = tmp_path / "loader.json"
    code, text = run_cli("bench", "loader", "--mosaics", 2, "--mosaic-size", 128, "--tile-size", 32, "--tiles", 16,
                         "--batch-size", 4, "--workers", 0, 1, "--output", out)
    assert code == 0 and "Speedup" in text
    r = read_report(out)
    assert r["benchmark"] == "loader" and r["workers"] == 0 and r["verified_equal_tiles"] == 3
    runs = {(x["source"], x["workers"]): x for x in r["runs"]}
    assert set(runs) == {(s, w) for s in ("tile_store", "geotiff", "tile_store_float") for w in (0, 1)}
    for x in runs.values():
        assert x["tiles"] == 16 and x["tiles_per_s"] > 0 and x["mb_per_s"] > 0
        assert x["tiles_per_s_per_worker"] == pytest.approx(x["tiles_per_s"] / max(x["workers"], 1))
        assert x["mb_per_s"] == pytest.approx(x["tiles_per_s"] * 32 * 32 * 4 / 1e6)
    assert r["tile_store_tiles_per_s"] == runs["tile_store", 0]["tiles_per_s"]
    assert r["geotiff_tiles_per_s"] == runs["geotiff", 0]["tiles_per_s"]
    assert r["speedup"] == pytest.approx(r["tile_store_tiles_per_s"] / r["geotiff_tiles_per_s"])
    assert r["speedup_by_workers"]["1"] == pytest.approx(
        runs["tile_store", 1]["tiles_per_s"] / runs["geotiff", 1]["tiles_per_s"])
    assert r["meets_target"] == (r["speedup"] >= 20)
    assert r["settings"]["store_tiles"] == 2 * 16 and r["geotiff_bytes_per_sample"] > 128 * 128 * 4


# ---------------------------------------------------------------------------------------------
# train


def test_mfu_is_achieved_flops_over_the_peak():
    assert train.mfu(2e12, 0.01, 1000.0) == pytest.approx(0.2)  # 200 TFLOP/s of 1000
    assert train.mfu(4.95e12, 0.05, 494.7) == pytest.approx(0.2001213, rel=1e-6)
    assert train.mfu(1e12, 0.01, None) is None and train.mfu(None, 0.01, 989.4) is None


def test_peak_table_matches_device_names(monkeypatch):
    assert train.peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == (989.4, "H100 bf16")
    assert train.peak_tflops("NVIDIA H100 PCIe", "bf16") == (756.0, "H100 PCIe bf16")
    assert train.peak_tflops("NVIDIA H200", "bf16") == (989.4, "H200 bf16")
    assert train.peak_tflops("NVIDIA H200 NVL", "bf16")[0] == 835.0
    assert train.peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == (312.0, "A100 bf16")
    assert train.peak_tflops("NVIDIA GeForce RTX 4090", "bf16") == (None, None)
    assert train.peak_tflops(None, "bf16") == (None, None)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert train.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == (494.7, "H100 tf32")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert train.peak_tflops("NVIDIA H100 80GB HBM3", "fp32") == (66.9, "H100 fp32")


def test_training_flops_are_forward_plus_backward():
    from baselines import build_model
    from noise2map.bench.efficiency import flops

    with torch.device("meta"):
        model = build_model("noise2map-ss", "demo")
    forward = flops(model, (torch.zeros(2, 3, 32, 32, device="meta"),))
    step = train.train_flops("noise2map-ss", "demo", 2, 32)
    assert forward > 0 and 2.5 * forward < step < 3.5 * forward  # backward ≈ 2 × forward


def test_bench_train_command(tmp_path):
    out = tmp_path / "train.json"
    code, text = run_cli("bench", "train", "--size", "demo", "--tile-size", 32, "--batch-size", 2, "--steps", 1,
                         "--warmup", 1, "--device", "cpu", "--variants", "channels_last", "fused", "fastest",
                         "--compile-backend", "eager", "--output", out)
    assert code == 0 and "fp32" in text
    r = read_report(out)
    rows = {x["variant"]: x for x in r["variants"]}
    assert list(rows) == ["fp32", "channels_last", "fused", "fastest"]  # fp32 first: the reference
    assert "CUDA only" in rows["fused"]["skipped"]
    timed = [rows[v] for v in ("fp32", "channels_last", "fastest")]
    for x in timed:
        assert "error" not in x and x["images_per_s"] > 0 and x["peak_memory_mib"] > 0
        assert x["images_per_s"] == pytest.approx(2 / x["step_s_median"])
        assert x["speedup_vs_fp32"] == pytest.approx(x["images_per_s"] / rows["fp32"]["images_per_s"])
        assert x["mfu"] is None and x["achieved_tflops"] > 0  # no CPU peak in the table
        assert np.isfinite(x["first_loss"])
    assert rows["fastest"]["options"] == {"bf16": True, "channels_last": True, "fused": False, "compile": True}
    # same weights and batch: channels_last changes the memory layout only, bf16 adds rounding
    assert rows["channels_last"]["loss_rel_diff_vs_fp32"] < 1e-4
    assert rows["fastest"]["loss_rel_diff_vs_fp32"] < 5e-2
    assert r["flops_per_step"] > 0
    assert r["fastest"] in rows


# ---------------------------------------------------------------------------------------------
# infer


def test_bench_infer_command(tmp_path):
    out = tmp_path / "infer.json"
    keys = ["noise2map-cd", "unet"]
    code, text = run_cli("bench", "infer", "--models", *keys, "--size", "demo", "--tile-size", 32,
                         "--batch-size", 2, "--repeats", 1, "--device", "cpu", "--output", out)
    assert code == 0 and "Noise2Map-CD" in text
    r = read_report(out)
    assert [x["key"] for x in r["models"]] == keys
    for x in r["models"]:
        assert "error" not in x and x["latency_ms"] > 0 and x["batch_ms"] > 0
        assert x["images_per_s"] == pytest.approx(2 / (x["batch_ms"] / 1000))
    assert [x["timestep_conditioned"] for x in r["models"]] == [True, False]


def test_bench_infer_unknown_model_fails_before_measuring(tmp_path, capsys):
    code = main(["bench", "infer", "--models", "no-such-model", "--size", "demo", "--output", str(tmp_path / "x.json")])
    assert code == 2 and "no-such-model" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_bench_efficiency_mode_still_writes_its_csv(tmp_path):
    out = tmp_path / "eff.csv"
    code, text = run_cli("bench", "efficiency", "--models", "noise2map-cd", "--size", "demo", "--tile", 32,
                         "--repeats", 1, "--device", "cpu", "--output", out)
    assert code == 0 and "| Noise2Map-CD | cd |" in text
    assert out.is_file() and out.with_suffix(".md").is_file()
