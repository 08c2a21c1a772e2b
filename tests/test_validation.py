"""The configuration checks: every bad value is a ConfigError that names the class and the field."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

import pytest

from alignsam.align.config import AlignTextConfig, AlignVisionConfig
from alignsam.errors import ConfigError
from alignsam.finetune.config import FinetuneConfig
from alignsam.sam.config import ImageEncoderConfig, MaskDecoderConfig
from alignsam.train.config import OptimConfig
from alignsam.validation import check_choice, check_numbers, require


@dataclasses.dataclass
class Fields:
    a: object = 1
    b: object = 0.5
    kind: object = "x"


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0, {"low": 0, "above": True}, "must be a number > 0, got 0"),
        (-1, {"low": 0}, "must be a number >= 0, got -1"),
        (True, {"low": 0}, "got True"),  # a bool is not a number
        ("3", {"low": 0}, "got '3'"),  # a string from a hand-edited file
        (None, {"low": 0}, "got None"),
        (1.5, {"low": 1, "integer": True}, "must be an integer >= 1, got 1.5"),
        (1.0, {"low": 0, "high": 1, "below": True}, "must be a number in [0, 1), got 1.0"),
        (0.0, {"low": 0, "high": 1, "above": True}, "must be a number in (0, 1], got 0.0"),
    ],
)
def test_check_numbers_refuses(value, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        check_numbers(Fields(a=value), "a", "b", **kwargs)
    assert str(caught.value).startswith("Fields.a must be")


def test_check_numbers_accepts():
    check_numbers(Fields(a=0, b=0.999), "a", "b", low=0, high=1, below=True)
    check_numbers(Fields(a=None, b=3), "a", "b", low=1, integer=True, optional=True)
    check_numbers(Fields(a=1, b=1.0), "a", "b", low=0, high=1)


def test_check_choice_and_require():
    check_choice(Fields(kind="x"), "kind", Literal["x", "y"])
    with pytest.raises(ConfigError, match=r"Fields\.kind must be one of \('x', 'y'\), got 'z'"):
        check_choice(Fields(kind="z"), "kind", Literal["x", "y"])
    require(True, "never")
    with pytest.raises(ConfigError, match="the message"):
        require(False, "the message")


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: ImageEncoderConfig(depth="four"), "ImageEncoderConfig.depth"),  # was a TypeError from `>`
        (lambda: ImageEncoderConfig(embed_dim=768.0), "ImageEncoderConfig.embed_dim"),
        (lambda: ImageEncoderConfig(layer_norm_eps=0), "ImageEncoderConfig.layer_norm_eps"),
        (lambda: MaskDecoderConfig(iou_head_hidden_dim=0), "MaskDecoderConfig.iou_head_hidden_dim"),
        (lambda: AlignTextConfig(hidden_size="768"), "AlignTextConfig.hidden_size"),
        (lambda: AlignVisionConfig(batch_norm_momentum=1.0), "AlignVisionConfig.batch_norm_momentum"),
        (lambda: OptimConfig(lr=-1e-3), "OptimConfig.lr"),
        (lambda: FinetuneConfig(out="o", train_data="d", init="demo", threads=0), "FinetuneConfig.threads"),
    ],
)
def test_the_configs_name_the_bad_field(build, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build()
