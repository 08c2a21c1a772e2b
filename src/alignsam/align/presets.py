"""Named ALIGN configurations, as short builder functions collected in a plain dict."""

from __future__ import annotations

from collections.abc import Callable

from alignsam.align.config import AlignConfig, AlignTextConfig, AlignVisionConfig


def align_base() -> AlignConfig:
    """`kakaobrain/align-base`: EfficientNet-B7 at 289 px (640-d) and BERT-base uncased."""
    return AlignConfig(
        text_config=AlignTextConfig(),
        vision_config=AlignVisionConfig(image_size=289, hidden_dim=640),
        projection_dim=640,
    )


PRESETS: dict[str, Callable[[], AlignConfig]] = {"align-base": align_base}
