"""Model selection without test leakage: a validation subset carved from the training split.

The released code selects WHU and xView2 checkpoints by their loss on the *test* split. With
``selection: val`` a seeded 10 % of the training split is held out instead, in whole source
scenes (a SpaceNet7 AOI, a WHU or xView2 image), so no scene feeds both the weights and the
choice of checkpoint, and no scene that also has test tiles is ever used.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from noise2map.errors import DataFormatError

VAL_FRACTION = 0.1
# Path components naming a scene: SpaceNet7 tiles of all months of one AOI are one scene.
_SCENE_DEPTH = {"spacenet7": 3}


def scene_of(source: str) -> str:
    """The source scene of a tile from its ``source`` entry in tiles.csv.

    ``spacenet7/train/<AOI>/images_masked/<month>.tif`` → ``spacenet7/train/<AOI>``; a pair
    ``a.png;b.png`` → its first image; any other path → itself.
    """
    first = source.split(";")[0]
    parts = first.split("/")
    depth = _SCENE_DEPTH.get(parts[0])
    return "/".join(parts[:depth]) if depth else first


def carve_validation(train_sources: list[str], test_sources: list[str], seed: int,
                     fraction: float = VAL_FRACTION) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) of the training split.

    Whole scenes, drawn in a seeded order until they hold at least ``fraction`` of the
    training tiles; scenes with test tiles are never drawn; at least one scene stays for
    training.
    """
    scenes = [scene_of(s) for s in train_sources]
    test_scenes = {scene_of(s) for s in test_sources}
    candidates = sorted(set(scenes) - test_scenes)
    if len(set(scenes)) < 2 or not candidates:
        raise DataFormatError(f"cannot carve a validation subset: {len(set(scenes))} training scene(s), "
                              f"{len(candidates)} without test tiles")
    held = _draw_scenes(scenes, candidates, max(1, math.ceil(fraction * len(scenes))), seed)
    val = [i for i, s in enumerate(scenes) if s in held]
    train = [i for i, s in enumerate(scenes) if s not in held]
    return train, val


def scene_subset(sources: list[str], fraction: float, seed: int) -> list[int]:
    """Indices of a seeded ``fraction`` of the tiles in whole scenes (the ablations' 50 %)."""
    scenes = [scene_of(s) for s in sources]
    if fraction >= 1:
        return list(range(len(scenes)))
    held = _draw_scenes(scenes, sorted(set(scenes)), max(1, math.ceil(fraction * len(scenes))), seed)
    return [i for i, s in enumerate(scenes) if s in held]


def _draw_scenes(scenes: list[str], candidates: list[str], target: int, seed: int) -> set[str]:
    """Whole scenes in a seeded order until they hold ``target`` tiles; one scene always stays out."""
    order = np.random.default_rng(seed).permutation(len(candidates))
    counts = Counter(scenes)
    held, size = set(), 0
    for i in order:
        if size >= target or len(held) == len(counts) - 1:
            break
        held.add(candidates[i])
        size += counts[candidates[i]]
    return held
