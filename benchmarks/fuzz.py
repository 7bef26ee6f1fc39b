"""Generated hostile inputs for every reader and every RPC.

Readers get valid samples mutated (bits flipped, bytes cut, spliced, repeated, hostile tokens
inserted) and structures generated from nothing (JSON trees, HL7 segments, DICOM datasets with
random elements, images of random sizes and modes). RPCs get requests generated from their
protobuf descriptors: every field of every nested message filled (or not) with values of its
type drawn from hostile pools, repeated fields of any length, streams of several messages.

An input ends one of three ways: accepted, refused with a clear error (the platform's
InvalidInput for a reader; a status other than UNKNOWN/INTERNAL with a message for an RPC), or
a crash (anything else, a hang past the call's deadline, a server that stopped answering)."""

from __future__ import annotations

import base64
import io
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from medxiaohe.common.errors import InvalidInput
from medxiaohe.corpus import samples
from medxiaohe.corpus.ingest import read_payload

HOSTILE_TEXT = [
    "", " ", "\x00", "\ufeff", "\ud7ff", "é" * 3, "\u202e", "\r\n", "|^~\\&", "{", "[[[[", "]]",
    "\"", "'", "\\", "%s%n", "../../etc/passwd", "NaN", "-1", "1e309", "9" * 40, "null",
    "A" * 5000, "fever " * 300, "Patient: John Smith MRN 12345678 DOB 01/02/1950", "\U0001f9ec",
    "MSH|^~\\&|", "OBX|1|TX|", "resourceType", "<script>", "*", "s3://bucket/key", "/", "..",
]  # fmt: skip
HOSTILE_INTS = [0, 1, -1, 2, 7, 255, 256, 65535, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1]
HOSTILE_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, float("inf"), float("-inf"), float("nan")]


class Mutator:
    """Random edits of valid bytes, as a fuzzer's havoc stage makes them."""

    def __init__(self, rng: random.Random, seeds: list[bytes]) -> None:
        self.rng, self.seeds = rng, seeds

    def __call__(self) -> bytes:
        data = bytearray(self.rng.choice(self.seeds))
        for _ in range(self.rng.randint(1, 8)):
            self.rng.choice(self.edits)(data)
        return bytes(data)

    @property
    def edits(self) -> list[Callable[[bytearray], None]]:
        return [self._flip, self._cut, self._insert, self._repeat, self._splice, self._token]

    def _at(self, data: bytearray) -> int:
        return self.rng.randrange(len(data) + 1)

    def _flip(self, data: bytearray) -> None:
        if data:
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)

    def _cut(self, data: bytearray) -> None:
        start = self._at(data)
        del data[start : start + self.rng.choice([1, 4, 64, 4096])]

    def _insert(self, data: bytearray) -> None:
        at = self._at(data)
        data[at:at] = bytes(self.rng.randrange(256) for _ in range(self.rng.choice([1, 2, 8])))

    def _repeat(self, data: bytearray) -> None:
        start = self._at(data)
        chunk = data[start : start + self.rng.choice([1, 16, 256])]
        data[start:start] = chunk * self.rng.choice([2, 16, 200])

    def _splice(self, data: bytearray) -> None:
        other = self.rng.choice(self.seeds)
        at = self._at(data)
        data[at:] = other[self.rng.randrange(len(other) + 1) :]

    def _token(self, data: bytearray) -> None:
        at = self._at(data)
        data[at:at] = self.rng.choice(HOSTILE_TEXT).encode("utf-8", "surrogatepass")


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any shape, FHIR-flavoured keys more often than not."""
    roll = rng.random()
    if depth > 6 or roll < 0.35:
        return rng.choice([None, True, rng.choice(HOSTILE_INTS), rng.choice(HOSTILE_TEXT), 1.5])
    if roll < 0.6:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["resourceType", "id", "entry", "resource", "text", "code", "conclusion", "note",
            "presentedForm", "data", "contentType", "subject", "reference", "name", "given",
            "family", "status", "valueString", "content", "attachment", "source"]  # fmt: skip
    value = {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))}
    if rng.random() < 0.5:
        value["resourceType"] = rng.choice(
            ["Bundle", "Patient", "DiagnosticReport", "Observation", "Condition",
             "DocumentReference", "Nope", ""]
        )  # fmt: skip
    return value


def random_hl7(rng: random.Random) -> bytes:
    """Segments of random fields and components, usually an MSH first."""
    names = ["MSH", "PID", "OBR", "OBX", "NTE", "EVN", "ZZZ", "", "MS"]
    segments = []
    for i in range(rng.randint(1, 8)):
        name = "MSH" if i == 0 and rng.random() < 0.8 else rng.choice(names)
        fields = [
            "^".join(rng.choice(HOSTILE_TEXT[:30]) for _ in range(rng.randint(1, 3)))
            for _ in range(rng.randint(0, 12))
        ]
        if name == "MSH":
            fields[:0] = ["^~\\&"] + [""] * rng.randint(0, 8) + [rng.choice(["ORU^R01", "ADT"])]
        segments.append("|".join([name, *fields]))
    return rng.choice(["\r", "\n", "\r\n"]).join(segments).encode("utf-8", "surrogatepass")


def random_dicom(rng: random.Random) -> bytes:
    """The sample study with random elements set, pixel geometry included."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(samples.dicom_bytes()))
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(["Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "NumberOfFrames",
                           "PatientName", "StudyDescription", "PhotometricInterpretation",
                           "PixelRepresentation", "BitsStored", "HighBit"])  # fmt: skip
        if name in ("PatientName", "StudyDescription", "PhotometricInterpretation"):
            setattr(ds, name, rng.choice([t for t in HOSTILE_TEXT if t.isascii()]))
        else:
            setattr(ds, name, rng.choice([0, 1, 3, 8, 16, 255, 65535]))
    if rng.random() < 0.3:
        ds.PixelData = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 100])))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def random_image(rng: random.Random) -> bytes:
    from PIL import Image

    mode = rng.choice(["1", "L", "RGB", "RGBA", "P", "I;16"])
    size = (rng.choice([1, 2, 17, 64, 300]), rng.choice([1, 3, 64, 200]))
    image = Image.new(mode, size)
    out = io.BytesIO()
    kind = rng.choice(["PNG", "JPEG"]) if mode in ("L", "RGB") else "PNG"
    image.save(out, format=kind)
    return out.getvalue()


def jpeg_seed() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 24), (120, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "Temperature"},
               "valueString": "fever"}  # fmt: skip


OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "Temperature"}}
OBSERVATION["valueString"] = "fever"


def reader_inputs(kind: str, rng: random.Random) -> Iterator[bytes]:
    """Endless inputs for one reader: half mutated samples, half generated structures."""
    notes = [t.encode() for t in samples.NOTES.values()]
    corpus = "\n".join(json.dumps(d) for d in samples.CORPUS).encode()
    fhir = json.dumps(samples.fhir_bundle()).encode()
    seeds = {
        "text": notes,
        "jsonl": [corpus],
        "fhir": [fhir, json.dumps(OBSERVATION).encode()],
        "hl7": [samples.HL7.encode()],
        "dicom": [samples.dicom_bytes()],
        "image": [samples.png_bytes(), jpeg_seed()],
    }[kind]
    mutate = Mutator(rng, seeds)
    generate: Callable[[], bytes] = {
        "text": lambda: rng.choice(HOSTILE_TEXT).encode("utf-8", "replace") * rng.randint(1, 50),
        "jsonl": lambda: "\n".join(json.dumps(random_json(rng)) for _ in range(3)).encode(),
        "fhir": lambda: json.dumps(random_json(rng)).encode(),
        "hl7": lambda: random_hl7(rng),
        "dicom": lambda: random_dicom(rng),
        "image": lambda: random_image(rng),
    }[kind]  # fmt: skip
    while True:
        yield mutate() if rng.random() < 0.5 else generate()


def fuzz_reader(kind: str, count: int, seed: int = 0) -> dict[str, Any]:
    """``count`` inputs through ``read_payload``: accepted, refused (InvalidInput), crashes."""
    rng = random.Random(seed)  # noqa: S311 (the same inputs for a seed)
    outcome = Counter[str]()
    crashes: Counter[str] = Counter()
    slowest = 0.0
    inputs = reader_inputs(kind, rng)
    for i in range(count):
        data = next(inputs)
        started = time.perf_counter()
        try:
            read_payload(kind, data, f"fuzz-{i}", caption="A caption.")
            outcome["accepted"] += 1
        except InvalidInput as exc:
            outcome["refused"] += 1
            if not str(exc):
                crashes["empty message"] += 1
        except Exception as exc:  # the finding: a reader's own error escaped
            crashes[type(exc).__name__] += 1
        slowest = max(slowest, time.perf_counter() - started)
    return {
        "inputs": count,
        "accepted": outcome["accepted"],
        "refused": outcome["refused"],
        "crashes": sum(crashes.values()),
        **({"crash_types": dict(crashes)} if crashes else {}),
        "slowest_ms": round(slowest * 1000, 1),
    }


# -- RPCs ---------------------------------------------------------------------------------


class RequestGenerator:
    """Messages of a type from its descriptor; ``fill`` is the chance a field is set."""

    def __init__(
        self,
        rng: random.Random,
        payloads: list[bytes],
        hints: dict[str, list[Any]] | None = None,
        fill: float = 0.6,
    ) -> None:
        self.rng, self.payloads, self.fill = rng, payloads, fill
        self.hints = hints or {}  # field name -> plausible values, drawn half the time

    def message(self, descriptor: Descriptor, cls: type[Message], depth: int = 0) -> Message:
        message = cls()
        self._fill(message, descriptor, depth)
        return message

    def _fill(self, message: Message, descriptor: Descriptor, depth: int) -> None:
        chosen_oneofs: set[str] = set()
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and oneof.name in chosen_oneofs:
                continue  # one member of a oneof (proto3 optional fields are their own)
            if self.rng.random() > self.fill or depth > 4:
                continue
            if oneof is not None:
                chosen_oneofs.add(oneof.name)
            if field.label == FieldDescriptor.LABEL_REPEATED:
                target = getattr(message, field.name)
                for _ in range(self.rng.choice([0, 1, 2, 3, 20])):
                    if field.type == FieldDescriptor.TYPE_MESSAGE:
                        if field.message_type.GetOptions().map_entry:
                            break  # maps: left empty
                        self._fill(target.add(), field.message_type, depth + 1)
                    else:
                        target.append(self._scalar(field))
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                self._fill(getattr(message, field.name), field.message_type, depth + 1)
                getattr(message, field.name).SetInParent()
            else:
                setattr(message, field.name, self._scalar(field))

    def _scalar(self, field: FieldDescriptor) -> Any:
        kind = field.type
        rng = self.rng
        if field.name in self.hints and rng.random() < 0.5:
            hint = rng.choice(self.hints[field.name])
            if isinstance(hint, str) == (kind == FieldDescriptor.TYPE_STRING):
                return hint
        if kind == FieldDescriptor.TYPE_STRING:
            text = rng.choice(HOSTILE_TEXT)
            return text.encode("utf-8", "replace").decode("utf-8", "replace")
        if kind == FieldDescriptor.TYPE_BYTES:
            choice = rng.random()
            if choice < 0.5:
                return rng.choice(self.payloads)
            if choice < 0.8:
                return Mutator(rng, self.payloads)()
            return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 64])))
        if kind == FieldDescriptor.TYPE_BOOL:
            return rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_ENUM:
            return rng.choice([v.number for v in field.enum_type.values])
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return rng.choice(HOSTILE_FLOATS)
        unsigned = kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
                            FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64)  # fmt: skip
        bits = 32 if kind in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32,
                              FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_FIXED32,
                              FieldDescriptor.TYPE_SFIXED32) else 64  # fmt: skip
        value = rng.choice(HOSTILE_INTS)
        if unsigned:
            return abs(value) % (2**bits)
        return max(-(2 ** (bits - 1)), min(2 ** (bits - 1) - 1, value))


def payloads() -> list[bytes]:
    """Valid payloads of every kind, for bytes fields (documents, study files, uploads)."""
    notes = [t.encode() for t in samples.NOTES.values()]
    fhir = json.dumps(samples.fhir_bundle()).encode()
    return [*notes, fhir, samples.HL7.encode(), samples.dicom_bytes(), samples.png_bytes(),
            base64.b64encode(b"fever")]  # fmt: skip


CLEAR = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAVAILABLE,  # NotReady, a full spool: with a message saying which
    grpc.StatusCode.UNIMPLEMENTED,
}


def services() -> list[ServiceDescriptor]:
    from medxiaohe_protos.evidence.v1 import evidence_pb2
    from medxiaohe_protos.ingestion.v1 import ingestion_pb2
    from medxiaohe_protos.report.v1 import report_pb2
    from medxiaohe_protos.rubric.v1 import rubric_pb2

    modules = (ingestion_pb2, evidence_pb2, report_pb2, rubric_pb2)
    return [s for m in modules for s in m.DESCRIPTOR.services_by_name.values()]


def _caller(channel: grpc.Channel, method: MethodDescriptor) -> Callable[[Any, float], Any]:
    request = GetMessageClass(method.input_type)
    reply = GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = {(False, False): channel.unary_unary, (True, False): channel.stream_unary,
            (False, True): channel.unary_stream, (True, True): channel.stream_stream}[
        (method.client_streaming, method.server_streaming)]  # fmt: skip
    call = kind(path, request_serializer=request.SerializeToString,
                response_deserializer=reply.FromString)  # fmt: skip
    if method.server_streaming:
        return lambda arg, timeout: sum(1 for _ in call(arg, timeout=timeout))
    return lambda arg, timeout: call(arg, timeout=timeout)


def fuzz_rpc(
    channel: grpc.Channel,
    method: MethodDescriptor,
    count: int,
    seed: int = 0,
    deadline_s: float = 30.0,
    threads: int = 4,
    hints: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """``count`` generated requests (a stream: one to three messages) to one RPC; ``hints``
    name plausible values of fields (an index that exists), so that requests get past the
    first check as often as not."""
    rng = random.Random(seed)  # noqa: S311 (the same requests for a seed)
    generator = RequestGenerator(rng, payloads(), hints)
    cls = GetMessageClass(method.input_type)
    requests: list[Any] = []
    for _ in range(count):
        made = [generator.message(method.input_type, cls) for _ in range(rng.randint(1, 3))]
        requests.append(iter(made) if method.client_streaming else made[0])
    call = _caller(channel, method)
    codes: Counter[str] = Counter()
    crashes: Counter[str] = Counter()

    def one(request: Any) -> None:
        try:
            call(request, deadline_s)
            codes["OK"] += 1
        except grpc.RpcError as exc:
            code = exc.code()
            codes[code.name] += 1
            if code not in CLEAR or not exc.details():
                crashes[code.name] += 1

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, requests))
    return {
        "inputs": count,
        "codes": dict(codes.most_common()),
        "crashes": sum(crashes.values()),
        **({"crash_codes": dict(crashes)} if crashes else {}),
    }
