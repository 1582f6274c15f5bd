"""torchvision ResNet-18/34/50 and MobileNetV2 state dicts, with Keras conventions on request."""

from __future__ import annotations

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.encoders.convert.common import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Converted,
    State,
    _depth,
)


def from_torchvision(state: State, origin: str = "torchvision", width_mult: float | None = None,
                     source: str | None = None) -> Converted:
    """A torchvision-named ResNet-18/34/50 or MobileNetV2 state dict (``fc`` / ``classifier`` dropped).

    ``origin="keras"`` (MobileNetV2 only): BatchNorm eps 1e-3, TensorFlow "same" padding and inputs
    in [-1, 1] (mean 0.5, std 0.5): the conventions of Keras Applications weights.
    """
    if origin not in ("torchvision", "keras"):
        raise ValueError(f"origin must be torchvision or keras, not {origin!r}")
    spec = InputSpec(modality="image", channels=3, image_size=224)
    if "features.0.0.weight" in state:
        from selfsup.encoders.mobilenet import width_from_state_dict  # noqa: PLC0415

        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        keras = origin == "keras"
        cfg = EncoderConfig(
            name="mobilenetv2", width_mult=width_mult or width_from_state_dict(state),
            in_chans=state["features.0.0.weight"].shape[1], bn_eps=1e-3 if keras else None, tf_padding=keras,
            mean=HALF if keras else IMAGENET_MEAN, std=HALF if keras else IMAGENET_STD, source=source,
        )
        spec.channels = cfg.in_chans
        return Converted(cfg, state, spec)
    if "layer1.0.conv1.weight" in state:
        if origin == "keras":
            raise ValueError("origin=keras is only known for MobileNetV2")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        blocks = [_depth(state, rf"layer{i}\.(\d+)\.") for i in range(1, 5)]
        bottleneck = "layer1.0.conv3.weight" in state
        names = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34",
                 (True, (3, 4, 6, 3)): "resnet50"}
        name = names.get((bottleneck, tuple(blocks)))
        if name is None:
            raise ValueError(f"ResNet with blocks {blocks} (bottleneck={bottleneck}) is not supported: 18, 34, 50")
        conv1 = state["conv1.weight"]
        cfg = EncoderConfig(name=name, cifar_stem=conv1.shape[-1] == 3, in_chans=conv1.shape[1],
                            mean=IMAGENET_MEAN, std=IMAGENET_STD, source=source)
        spec.channels = conv1.shape[1]
        return Converted(cfg, state, spec)
    raise ValueError("not a torchvision ResNet or MobileNetV2 state dict (no layer1.0.conv1 / features.0.0 weights)")


__all__ = ["from_torchvision"]
