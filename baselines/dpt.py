"""DPT (Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021) from
segmentation-models-pytorch (``smp.DPT``, added in smp 0.5.0).

The paper's description ("ViT backbone pretrained with DINO + convolutional decoder", 121.0M)
matches smp's DPT with its default decoder on a DINO ViT-B/16::

    smp.DPT(encoder_name="tu-vit_base_patch16_224.dino", encoder_depth=4, decoder_readout="cat",
            decoder_intermediate_channels=(256, 512, 1024, 1024), decoder_fusion_channels=256)

= 121,009,410 parameters (ViT-B/16 without classifier, 197 position tokens, 85.80M + decoder and
head 35.21M; ../shared/notes/baselines.md). This is a plausible match, not a confirmed one: the
paper does not name its implementation. ``dynamic_img_size=True`` lets the 224-px ViT take the
suite's 256-px tiles (the position embedding is interpolated; the count does not change).
Input height and width must be multiples of 32 (patch 16, plus the stride-32 reassemble level).

Demo size: timm's ``test_vit`` (the same VisionTransformer class: patch 16, width 64, 6 blocks,
2 heads, cls token) at img_size 32 with a narrow decoder, same code path; without classifier
(as the DINO ViT) and without the final LayerNorm (the paper build keeps it, 1,536 parameters that
smp's DPT never uses, so every demo parameter gets a gradient). A 32×32 input is 2×2
tokens; the four reassemble levels are 8×8, 4×4, 2×2 and 1×1, so the 4-level decoder works.

Builders start from random init (``encoder_weights=None``); the DINO ViT-B/16 weights are the
weights cache's job.
"""

from __future__ import annotations

from baselines import ModelSpec

PAPER = {
    "encoder_name": "tu-vit_base_patch16_224.dino", "encoder_depth": 4, "decoder_readout": "cat",
    "decoder_intermediate_channels": (256, 512, 1024, 1024), "decoder_fusion_channels": 256,
    "dynamic_img_size": True,
}
DEMO = {
    "encoder_name": "tu-test_vit", "encoder_depth": 4, "decoder_readout": "cat",
    "decoder_intermediate_channels": (16, 32, 64, 64), "decoder_fusion_channels": 32, "img_size": 32,
    "num_classes": 0, "final_norm": False,  # as the DINO ViT: no classifier; no unused final norm
}


def build(size: str, num_classes: int = 2, **options):
    import segmentation_models_pytorch as smp

    kwargs = {**(DEMO if size == "demo" else PAPER), "encoder_weights": None, "classes": num_classes, **options}
    return smp.DPT(**kwargs)


SPECS = [
    ModelSpec("dpt", "DPT", "ss", 121.0, build,
              build_note='smp.DPT("tu-vit_base_patch16_224.dino"), default decoder (readout cat, '
                         "channels 256/512/1024/1024, fusion 256)",
              weights=("vit_base_patch16_224.dino.safetensors",)),
]
