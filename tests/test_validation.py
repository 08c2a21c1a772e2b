"""The configuration checks: every bad value is a ConfigError that names the class and the field."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

import numpy as np
import pytest

from alignsam.align.modeling.config import AlignTextConfig, AlignVisionConfig
from alignsam.errors import ConfigError, InputError
from alignsam.sam.modeling.config import ImageEncoderConfig, MaskDecoderConfig
from alignsam.train.align.config import OptimConfig
from alignsam.train.sam.config import FinetuneConfig
from alignsam.validation import check_choice, check_count, check_number, check_numbers, require


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


def test_check_count_and_check_number():
    assert check_count(3, "k") == 3 and check_count(np.int64(2), "k") == 2 and check_count(0, "k", 0) == 0
    for bad in (0, -1, 2.0, "3", True, None):
        with pytest.raises(InputError, match=r"k must be a whole number of at least 1, got "):
            check_count(bad, "k")
    assert check_number(1, "t") == 1.0 and check_number(np.float32(0.5), "t", 0, 1) == 0.5
    for bad, low, high in (("x", None, None), (float("nan"), None, None), (float("inf"), 0, None), (True, None, None)):
        with pytest.raises(InputError, match="t must be a finite number"):
            check_number(bad, "t", low, high)
    with pytest.raises(InputError, match=r"t must be a finite number in \[0, 1\], got 1\.5"):
        check_number(1.5, "t", 0, 1)
    with pytest.raises(InputError, match=r"t must be a finite number <= 1, got 2"):
        check_number(2, "t", high=1)
