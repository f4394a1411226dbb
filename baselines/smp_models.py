"""Segmentation baselines of Table I from segmentation-models-pytorch ("default settings").

Paper size: the architecture with a ResNet-50 encoder, as the paper's counts imply
(UNet 32.5M, UNet++ 49.0M, DeepLabV3+ 26.7M, UPerNet 37.3M). SegFormer's 5.6M has no
SegFormer-with-MLP-decoder build; ``smp.Unet("mit_b0")`` (5.55M, a MiT-B0 encoder) is the
standard SMP build at that count (../shared/notes/baselines.md), and ``smp.Segformer("mit_b0")``
(3.71M) is registered beside it as SegFormer-MLP. Demo size: a ResNet-18 encoder (timm) cut
to three stages and narrow decoders, same code path.
Builders start from random init; the training run loads the ImageNet encoder checkpoint
named in ``weights`` from the weight cache (noise2map.weights) unless ``weights: none``.
"""

from __future__ import annotations

from functools import partial

from baselines import ModelSpec

# timm's features_only drops the unused stages, so the cut encoder is small (0.8M).
DEMO_ENCODER = {"encoder_name": "tu-resnet18", "encoder_depth": 3}
DEMO_DECODER = {
    "Unet": {"decoder_channels": (32, 16, 8)},
    "UnetPlusPlus": {"decoder_channels": (32, 16, 8)},
    "DeepLabV3Plus": {"decoder_channels": 32},
    "UPerNet": {"decoder_channels": 32},
    "Segformer": {"decoder_segmentation_channels": 32},
}


def build(arch: str, encoder: str, size: str, num_classes: int = 2, **options):
    import segmentation_models_pytorch as smp

    kwargs = {"encoder_name": encoder, "encoder_weights": None, "classes": num_classes}
    if size == "demo":
        if encoder.startswith("mit_"):  # MiT-B0 is small already; smp needs its 5 stages
            kwargs.update(DEMO_DECODER[arch] if arch == "Segformer" else {})
        else:
            kwargs.update(DEMO_ENCODER, **DEMO_DECODER[arch])
    kwargs.update(options)
    return getattr(smp, arch)(**kwargs)


R50, MIT_B0 = "resnet50.imagenet.safetensors", "mit_b0.imagenet.safetensors"
SPECS = [
    ModelSpec("unet", "UNet", "ss", 32.5, partial(build, "Unet", "resnet50"),
              build_note='smp.Unet("resnet50")', weights=(R50,)),
    ModelSpec("unetpp", "UNet++", "ss", 49.0, partial(build, "UnetPlusPlus", "resnet50"),
              build_note='smp.UnetPlusPlus("resnet50")', weights=(R50,)),
    ModelSpec("deeplabv3plus", "DeepLabV3+", "ss", 26.7, partial(build, "DeepLabV3Plus", "resnet50"),
              build_note='smp.DeepLabV3Plus("resnet50")', weights=(R50,)),
    ModelSpec("segformer", "SegFormer", "ss", 5.6, partial(build, "Unet", "mit_b0"),
              build_note='smp.Unet("mit_b0"): the standard SMP build at 5.6M (no MLP-decoder build gives it)',
              weights=(MIT_B0,)),
    ModelSpec("upernet", "UPerNet", "ss", 37.3, partial(build, "UPerNet", "resnet50"),
              build_note='smp.UPerNet("resnet50")', weights=(R50,)),
    ModelSpec("segformer-mlp", "SegFormer-MLP", "ss", 5.6, partial(build, "Segformer", "mit_b0"),
              reference_params_m=3.71,
              build_note='smp.Segformer("mit_b0"), the MLP decoder; not a Table I row (3.71M vs 5.6M)',
              weights=(MIT_B0,)),
]
