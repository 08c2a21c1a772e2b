"""Request and response models: what `/openapi.json` and `/docs` publish, and what every body is checked
against before any work starts (a field of the wrong type, a NaN, an out-of-range count or an unknown key
is a 422 naming the field).

Models are strict (no "5" for 5, no true for 1) and refuse NaN and infinity; lists and counts have bounds,
so that no request can ask for unbounded work.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

ImageRef = Annotated[
    str,
    Field(
        min_length=1,
        description="An image: base64 of its file, a data URL (`data:image/png;base64,...`), or a path on the "
        "server (`path:/data/x.jpg`, or a plain path) under the folders of `--allow-paths`.",
    ),
]
Text = Annotated[str, Field(min_length=1, max_length=10_000)]


def _check_templates(value: str | list[str]) -> str | list[str]:
    """A bad template is the request's mistake, named before any work (a set name or one `{}` each)."""
    from alignsam.errors import InputError
    from alignsam.tools.templates import resolve_templates

    try:
        resolve_templates(value)
    except InputError as err:
        raise ValueError(str(err)) from None
    return value


Templates = Annotated[
    str | list[Text],
    AfterValidator(_check_templates),
    Field(description="A template set (`photo`, `none`, `pipeline`, `simple`, `imagenet`) or templates with `{}`."),
]
Point = Annotated[
    list[float],
    Field(min_length=2, max_length=3, description="`[x, y]` (on the object) or `[x, y, label]`, label 1 or 0."),
]
XY = Annotated[list[float], Field(min_length=2, max_length=2, description="`[x, y]` in the image's pixels.")]
Box = Annotated[list[float], Field(min_length=4, max_length=4, description="`[x0, y0, x1, y1]` in pixels.")]
MaskFormat = Literal["rle", "png"]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class Loose(BaseModel):
    """Responses: documented, not validated on the way out (extra keys allowed)."""

    model_config = ConfigDict(extra="allow")


# --- the stateless endpoints ------------------------------------------------------------------------------


class ClassifyRequest(Strict):
    images: list[ImageRef] = Field(min_length=1, max_length=256)
    labels: list[Text] = Field(min_length=1, max_length=20_000)
    templates: Templates = "photo"
    top_k: int = Field(5, ge=1, le=1000)


class EmbedRequest(Strict):
    images: list[ImageRef] | None = Field(None, min_length=1, max_length=256)
    texts: list[Text] | None = Field(None, min_length=1, max_length=4096)


class TermModel(Strict):
    text: Text | None = None
    image: ImageRef | None = None
    weight: float = Field(1.0, ge=-100, le=100)


class ItemModel(Strict):
    """A similarity item as an object: one text, one image, or weighted `terms` summed."""

    text: Text | None = None
    image: ImageRef | None = None
    terms: list[TermModel] | None = Field(None, min_length=1, max_length=16)
    name: str | None = Field(None, max_length=200)


SimilarityItem = Annotated[
    str | ItemModel,
    Field(
        description="A text; an image (base64, a data URL, or `image:<base64 or path>`); `text:...`; or a "
        "composition such as `image:<base64> + 0.5*text:in snow`; or an object (`text`, `image` or `terms`)."
    ),
]


class SimilarityRequest(Strict):
    rows: list[SimilarityItem] = Field(min_length=1, max_length=256)
    cols: list[SimilarityItem] = Field(min_length=1, max_length=4096)


class TagOptions(Strict):
    vocab: list[Text] | None = Field(None, min_length=2, max_length=20_000, description="Tags to choose among.")
    groups: str | list[Text] | None = Field(None, description="Groups of the built-in vocabulary (default: all).")
    threshold: float = Field(3.0, ge=-100, le=100, description="z-score a tag must reach.")
    max_tags: int = Field(10, ge=1, le=1000)
    min_tags: int = Field(1, ge=0, le=1000)
    templates: Templates = "photo"


class TagRequest(TagOptions):
    images: list[ImageRef] = Field(min_length=1, max_length=256)


class AmgOptions(Strict):
    """The automatic generator's options; unset ones take the model's `amg.json`, else the official defaults."""

    points_per_side: int | None = Field(None, ge=1, le=128)
    points_per_batch: int | None = Field(None, ge=1, le=4096)
    pred_iou_thresh: float | None = Field(None, ge=-10, le=10)
    stability_score_thresh: float | None = Field(None, ge=-10, le=10)
    box_nms_thresh: float | None = Field(None, ge=0, le=1)
    crop_n_layers: int | None = Field(None, ge=0, le=3)
    min_mask_region_area: int | None = Field(None, ge=0, le=1_000_000)

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None and k in AmgOptions.model_fields}


class SegmentRequest(Strict):
    image: ImageRef
    points: list[Point] = Field([], max_length=64)
    boxes: list[Box] = Field([], max_length=64)
    multimask: bool | None = Field(None, description="Three candidates (default for one point) or one.")


class MasksRequest(AmgOptions):
    image: ImageRef


# --- image sessions -----------------------------------------------------------------------------------------


class ImageUpload(Strict):
    image: ImageRef
    name: str | None = Field(None, max_length=200, description="A name for reports (default: upload).")


class ImageInfo(Loose):
    id: str
    status: Literal["pending", "ready", "failed"]
    progress: float = Field(description="Share of the image encoder done, 0..1.")
    width: int
    height: int
    name: str
    sha256: str
    shared: bool = Field(description="The embedding is shared with an identical upload.")
    error: str | None = None


class Scribble(Strict):
    line: list[XY] = Field(min_length=1, max_length=10_000, description="The polyline, `[[x, y], ...]`.")
    label: Literal[0, 1] = Field(1, description="1: on the object; 0: not on it.")


class SessionSegmentRequest(Strict):
    points: list[Point] = Field([], max_length=64)
    box: Box | None = None
    boxes: list[Box] = Field([], max_length=64, description="Several boxes: one mask each (no points).")
    scribbles: list[Scribble] = Field([], max_length=32, description="Polylines, each turned into a few points.")
    mask_input: str | None = Field(
        None, max_length=32, description="A `mask_id` of an earlier answer on this image: its logits seed this one."
    )
    multimask: bool | None = Field(None, description="Three candidates (default for one point) or one.")
    max_candidates: int = Field(3, ge=1, le=3, description="Candidates returned, best first.")
    output: list[MaskFormat] = Field(["rle"], max_length=2, description="`rle` (COCO) and/or `png` (base64).")


class RLE(Loose):
    size: list[int]
    counts: str


class Candidate(Loose):
    mask_id: str = Field(description="Send it back as `mask_input` to refine this mask.")
    score: float = Field(description="SAM's predicted IoU.")
    area: int
    bbox: list[int] = Field(description="XYWH.")
    segmentation: RLE | None = None
    png: str | None = Field(None, description="The mask as a grayscale PNG, base64.")


class SegmentResult(Loose):
    image_id: str
    width: int
    height: int
    candidates: list[Candidate]


class Annotation(Loose):
    id: int
    segmentation: RLE
    bbox: list[int]
    area: int
    predicted_iou: float


class SA1B(Loose):
    image: dict[str, Any]
    annotations: list[Annotation]


class SessionMasksRequest(AmgOptions):
    output: list[MaskFormat] = Field(["rle"], max_length=2, description="`png` adds `label_map` (mask k = k+1).")


class LabelRequest(SessionMasksRequest):
    labels: list[Text] | None = Field(None, min_length=1, max_length=20_000, description="Class names.")
    groups: list[Text] | None = Field(None, description="Groups of the built-in vocabulary (default: objects).")
    templates: Templates = "photo"
    top_k: int = Field(3, ge=1, le=100)


class Reference(Strict):
    image_id: str = Field(max_length=64)
    box: Box


class FindRequest(AmgOptions):
    text: Text | None = Field(None, description='What to find: "the red star" (a leading article is dropped).')
    reference: Reference | None = Field(None, description="Or a box of another image session.")
    templates: Templates = "photo"
    top_k: int = Field(3, ge=1, le=100)
    output: list[MaskFormat] = Field(["rle"], max_length=2)


class SessionTagRequest(TagOptions):
    pass


class LabelledMasks(SA1B):
    label_map: str | None = Field(None, description="PNG, base64: pixel value k+1 where annotation k lies.")


class SearchRequest(Strict):
    text: Text | None = None
    image: ImageRef | None = Field(None, description="A query image (base64 or data URL).")
    image_id: str | None = Field(None, max_length=64, description="Or the image of a session.")
    text_weight: float = Field(1.0, ge=-100, le=100)
    image_weight: float = Field(1.0, ge=-100, le=100)
    k: int = Field(12, ge=1, le=1000)
    where: str | None = Field(
        None, max_length=4000,
        description="A metadata filter of an index folder, e.g. \"width >= 512 AND path LIKE '%/beach/%'\" "
        "(docs/index.md).",
    )  # fmt: skip
    dedupe: float | None = Field(
        None, gt=0, le=1, description="Drop results whose cosine with a better one is at least this (index folders)."
    )


class Hit(Loose):
    path: str
    score: float
    thumbnail: str


class SearchResult(Loose):
    query: dict[str, Any]
    results: list[Hit]
    index_size: int


class ErrorBody(Loose):
    error: str = Field(description="What is wrong, in one line, naming the field.")
    field: str | None = None
