"""A study's images as the report pipeline sees them: decoded once and bounded (PNG, JPEG, or
DICOM, named by its SOP instance UID), and the views the reasoning agent asks for (a zoom into a
box, a rotation) with the mapping from a view's pixels back to the original image's."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus.dicom import PixelBudget, check_pixels, decode_frames, open_dicom

MAX_IMAGES = 8
MAX_PIXELS = 40_000_000  # one image
MAX_REQUEST_PIXELS = 48_000_000  # every image of a request together (3 bytes each as RGB)
VIEW_SIDE = 448  # a zoomed view's longer side, in pixels
ROTATIONS = (90, 180, 270)  # counter-clockwise

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in an image's own pixels


@dataclass(frozen=True)
class StudyImage:
    id: str  # the caller's id, or the DICOM SOP instance UID
    image: Any  # PIL RGB image
    frame: int = 0

    def to_original(self, box: Box) -> Box:
        return box

    @property
    def original(self) -> StudyImage:
        return self


@dataclass(frozen=True)
class View:
    """What the agent sees after ``zoom``/``rotate``: ``source``'s ``crop``, rotated by
    ``degrees`` counter-clockwise, then scaled by ``scale``."""

    id: str
    source: StudyImage | View
    crop: Box
    degrees: int
    scale: float
    image: Any

    @property
    def original(self) -> StudyImage:
        return self.source.original

    def to_original(self, box: Box) -> Box:
        """A box in this view's pixels as a box in the original image's pixels."""
        w, h = self.crop[2] - self.crop[0], self.crop[3] - self.crop[1]
        corners = [
            _unrotate(x / self.scale, y / self.scale, w, h, self.degrees)
            for x, y in ((box[0], box[1]), (box[2], box[3]))
        ]
        xs = sorted(min(max(x, 0.0), w) + self.crop[0] for x, _ in corners)
        ys = sorted(min(max(y, 0.0), h) + self.crop[1] for _, y in corners)
        return self.source.to_original((round(xs[0]), round(ys[0]), round(xs[1]), round(ys[1])))


def _unrotate(u: float, v: float, w: float, h: float, degrees: int) -> tuple[float, float]:
    """A point of a ``w`` x ``h`` image rotated ``degrees`` counter-clockwise, back."""
    if degrees == 90:
        return w - v, u
    if degrees == 180:
        return w - u, h - v
    if degrees == 270:
        return v, h - u
    return u, v


def check_box(box: Any, width: int, height: int) -> Box:
    """Four integers with 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height."""
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(type(v) is int for v in box)):
        raise InvalidInput("a box is four integers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InvalidInput(f"the box must lie inside the {width}x{height} image, x0 < x1, y0 < y1")
    return x0, y0, x1, y1


def zoom(view_id: str, source: StudyImage | View, box: Any) -> View:
    crop = check_box(box, *source.image.size)
    piece = source.image.crop(crop)
    scale = VIEW_SIDE / max(piece.size)
    size = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
    return View(view_id, source, crop, 0, scale, piece.resize(size))


def rotate(view_id: str, source: StudyImage | View, degrees: int) -> View:
    if degrees not in ROTATIONS:
        raise InvalidInput(f"degrees must be one of {ROTATIONS}")
    width, height = source.image.size
    turned = source.image.rotate(degrees, expand=True)
    return View(view_id, source, (0, 0, width, height), degrees, 1.0, turned)


def png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def decode_image(content: bytes, image_id: str, budget: PixelBudget) -> list[StudyImage]:
    """The image(s) in ``content``: one for PNG/JPEG, one per frame for DICOM (its SOP instance
    UID as the id). Sizes are checked from the headers, and taken from the request's ``budget``,
    before pixels are decoded; a file too large to decode is InvalidInput, never MemoryError."""
    if content[128:132] == b"DICM":
        return _dicom(content, image_id, budget)
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(content))
        if image.format not in ("PNG", "JPEG"):
            raise InvalidInput(f"image {image_id!r} is not PNG, JPEG or DICOM")
        if image.width * image.height > MAX_PIXELS:
            raise InvalidInput(f"image {image_id!r} has more than {MAX_PIXELS:,} pixels")
        budget.take(image.width * image.height)
        return [StudyImage(image_id, image.convert("RGB"))]
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, MemoryError):
        raise InvalidInput(f"image {image_id!r} cannot be decoded (PNG, JPEG or DICOM)") from None


def _dicom(content: bytes, image_id: str, budget: PixelBudget) -> list[StudyImage]:
    """Through the ingestion reader's own bounded path: the inflated size measured first,
    the pixel description checked, every frame's pixels taken from the budget."""
    from PIL import Image

    try:
        dataset = open_dicom(content, max_inflated=budget.remaining * 4 + (1 << 20))
        if "PixelData" not in dataset:
            raise InvalidInput("it has no pixel data")
        frames = check_pixels(dataset)
        if frames > MAX_IMAGES:
            raise InvalidInput(f"it has more than {MAX_IMAGES} frames")
        uid = str(dataset.get("SOPInstanceUID", "") or image_id)
        decoded = decode_frames(dataset, range(frames), budget)
        return [
            StudyImage(uid, Image.fromarray(frame).convert("RGB"), i)
            for i, frame in enumerate(decoded)
        ]
    except MemoryError:
        raise InvalidInput(f"DICOM image {image_id!r} is too large to decode") from None
    except InvalidInput as exc:
        raise InvalidInput(f"DICOM image {image_id!r}: {exc}") from None
