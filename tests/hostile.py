"""Hostile inputs that more than one test sends: a DICOM deflate bomb, a highly compressible
PNG of many pixels. Built here from the project's sample study, small on the wire."""

from __future__ import annotations

import io
import zlib

from medxiaohe.corpus import samples


def dicom(**fields: object) -> bytes:
    """The sample study with some header fields changed."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes()))
    for name, value in fields.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def deflated_dicom() -> bytes:
    """The sample study saved with the Deflated Explicit VR Little Endian transfer syntax."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes()))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def deflate_bomb(inflated_mib: int) -> bytes:
    """A deflated DICOM file of under 1 MiB whose dataset inflates to ``inflated_mib`` MiB of
    zeros (pydicom alone would inflate it in one call)."""
    import pydicom

    legit = deflated_dicom()
    stream = io.BytesIO(legit)
    pydicom.filereader.read_preamble(stream, False)
    pydicom.filereader._read_file_meta_info(stream)
    meta_end = stream.tell()  # the deflated dataset starts here
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zero = bytes(1 << 20)
    body = b"".join(deflater.compress(zero) for _ in range(inflated_mib))
    return legit[:meta_end] + body + deflater.flush()


def png(width: int, height: int) -> bytes:
    """A one-bit PNG of ``width`` x ``height`` pixels: a few KB for tens of megapixels."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, format="PNG")
    return out.getvalue()
