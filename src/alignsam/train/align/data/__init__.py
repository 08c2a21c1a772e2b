"""Training data: sources (webdataset shards, tables), filters, augmentation, the resumable pipeline."""

from alignsam.train.align.data.filters import FilterConfig, Rule, SampleFilter, repeated_captions
from alignsam.train.align.data.pipeline import LoaderState, PairStream, ResumableLoader, StreamPosition
from alignsam.train.align.data.shards import expand_braces, iter_tar, shard_list
from alignsam.train.align.data.sources import RawSample, Source, TableSource, WebDatasetSource, open_source
from alignsam.train.align.data.transforms import TrainTransform

__all__ = [
    "FilterConfig",
    "LoaderState",
    "PairStream",
    "RawSample",
    "ResumableLoader",
    "Rule",
    "SampleFilter",
    "Source",
    "StreamPosition",
    "TableSource",
    "TrainTransform",
    "WebDatasetSource",
    "expand_braces",
    "iter_tar",
    "open_source",
    "repeated_captions",
    "shard_list",
]
