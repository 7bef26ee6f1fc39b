"""Typed settings, read from the environment once at process start.

Every variable is ``MEDXIAOHE_<FIELD>``; nested fields use ``__``, e.g.
``MEDXIAOHE_INGESTION__ALLOW='{"ehr-gateway": ["TagEntities", "IngestDocuments"]}'``.
Nothing else in the code base reads ``os.environ``: build a ``Settings`` with ``from_env()``
in ``main`` and pass it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from medxiaohe.common.errors import InvalidInput

SERVICE_NAMES = ("ingestion", "evidence", "report", "rubric")
ServiceName = Literal["ingestion", "evidence", "report", "rubric"]


class ServiceSettings(BaseModel):
    """Settings of one gRPC service."""

    model_config = {"extra": "forbid"}

    allow: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Caller identity (client certificate common name) -> RPC method names it may call, "
            'e.g. {"ehr-gateway": ["TagEntities"]}; "*" allows every RPC of the service. '
            "Health and reflection are open to every authenticated caller."
        ),
    )
    indexes: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            'Caller identity -> the evidence indexes it may use, or ["*"]: for the evidence '
            "service, the indexes IndexPassages may write (what every report reads is "
            "grounded in them); for the report service, the indexes a GenerateReport request "
            "may name besides the default one. Nobody else may."
        ),
    )

    def may_use(self, caller: str, index: str) -> bool:
        named = self.indexes.get(caller, [])
        return "*" in named or index in named


class Settings(BaseSettings):
    """Everything a process of the platform is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="MEDXIAOHE_", env_nested_delimiter="__", extra="forbid"
    )

    # object store
    store_uri: str = Field(
        ".medxiaohe/store",
        description="Artifact store root: a local folder, file:///path, or s3://bucket/prefix.",
    )
    s3_endpoint: str = Field("", description="host:port of the S3 API for s3:// store URIs.")
    s3_access_key: SecretStr = Field(SecretStr(""), description="S3 access key.")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    s3_secure: bool = Field(True, description="Use HTTPS to reach the S3 endpoint.")
    s3_region: str = Field("us-east-1", description="S3 region used for request signing.")

    # task queue
    broker_url: str = Field(
        "", description="Celery broker (redis://...); empty runs tasks in-process."
    )
    result_backend: str = Field("", description="Celery result backend; defaults to the broker.")
    allow_plaintext_backends: bool = Field(
        False,
        description=(
            "Reach the store (s3_secure=false) or the broker (redis://) in plaintext at an "
            "address other than 127.0.0.1; refused at start otherwise."
        ),
    )
    task_time_limit_s: float = Field(
        3600.0, gt=0, description="A task is killed after this long (the longest shard's time)."
    )
    worker_max_memory_mb: int = Field(
        8192, ge=64, description="A worker pool process is replaced once it holds this much."
    )
    task_max_deliveries: int = Field(
        3,
        ge=1,
        description="A task delivered this often without finishing (it killed its worker) goes "
        "to the dead-letter queue.",
    )

    # gRPC server
    grpc_host: str = Field("0.0.0.0", description="Address the gRPC server binds.")  # noqa: S104
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (mTLS); 0 picks one.")
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Plaintext port serving only grpc.health.v1, for kubelet probes; 0 disables.",
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus metrics; 0 disables.")
    review_port: int = Field(
        0,
        ge=0,
        le=65535,
        description=(
            "The report review web app (HTTPS on the gRPC address, the same certificates); "
            "0 disables. Served by the process that runs the report service."
        ),
    )
    review_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "Bearer tokens for review app callers without a client certificate (a hospital's "
            "authenticating proxy): caller name -> token, from a Secret. The caller still needs "
            "ReviewReports in the report service's allow list."
        ),
    )
    otel_endpoint: str = Field(
        "",
        description=(
            "OpenTelemetry collector (OTLP over gRPC, e.g. http://otel-collector:4317) that "
            "receives traces: each RPC, each report step, each model call; empty: no tracing."
        ),
    )
    tls_cert: Path | None = Field(None, description="Server certificate chain (PEM).")
    tls_key: Path | None = Field(None, description="Server private key (PEM).")
    tls_client_ca: Path | None = Field(
        None, description="CA that client certificates must chain to."
    )
    insecure: bool = Field(False, description="Plaintext gRPC; only allowed on 127.0.0.1.")
    max_message_mb: int = Field(16, ge=1, le=1024, description="Largest gRPC message, MiB.")
    max_stream_messages: int = Field(
        10_000, ge=1, description="Most messages one client stream may carry."
    )
    max_stream_mb: int = Field(
        256, ge=1, description="Most bytes (MiB) one client stream may carry (uploads aside)."
    )
    max_upload_mb: int = Field(
        4096, ge=1, description="Largest upload (MiB); it is spooled to disk, not memory."
    )
    upload_spool_mb: int = Field(
        8192,
        ge=1,
        description=(
            "Disk (MiB) that uploads in flight may spool to together (the pod's /tmp volume "
            "holds it); an upload that would go past it is refused, UNAVAILABLE, to retry."
        ),
    )
    max_concurrent_rpcs: int = Field(
        64, ge=1, description="RPCs one server runs at once; more wait or are refused."
    )
    drain_grace_s: float = Field(
        20.0, ge=0, description="In-flight RPCs get this long after SIGTERM."
    )
    grpc_max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description=(
            "A client's connection is closed (GOAWAY, with jitter) after this long, so that its "
            "next calls spread over the replicas there are now; 0 keeps connections for ever."
        ),
    )
    grpc_max_connection_age_grace_s: float = Field(
        900.0, ge=0, description="Calls in flight on an aged connection get this long to finish."
    )
    grpc_keepalive_s: float = Field(
        60.0,
        ge=1,
        description="Idle connections are pinged this often; a silent peer is dropped.",
    )
    evidence_encoder_threads: int = Field(
        2,
        ge=1,
        le=64,
        description=(
            "Threads that encode RetrieveEvidence queries, each a batch of those waiting; run "
            "the evidence pod with OMP_NUM_THREADS=1 so they do not contend (the chart does)."
        ),
    )
    evidence_query_bf16: bool | None = Field(
        None,
        description=(
            "Encode RetrieveEvidence queries on the CPU with bfloat16 matrix products (vectors "
            "within a cosine of 0.999 of float32's); unset: where the CPU multiplies bfloat16 in "
            "hardware (AVX512-BF16 or AMX), where it takes under half the time. A GPU encoder "
            "runs as loaded."
        ),
    )
    report_max_concurrent: int = Field(
        4,
        ge=1,
        description=(
            "Reports one replica generates at once (each holds its decoded images, at most "
            "48 M pixels, ~150 MB, while it runs); more wait for a place within their deadline."
        ),
    )
    health_interval_s: float = Field(
        2.0, gt=0, description="How often dependencies are re-checked."
    )

    deid_secret: SecretStr = Field(
        SecretStr(""),
        description=(
            "Keys every pseudonym (patients, records, file names, audit ids) and the per-patient "
            "date shift: at least 32 random bytes, from a Secret. Required outside the embedded "
            "runtime, which generates one into its home."
        ),
    )
    checkpoint_key: SecretStr = Field(
        SecretStr(""),
        description=(
            "Keys the seal of every training checkpoint: a resumed run loads (unpickles) only "
            "checkpoints sealed with it. At least 32 random bytes, from a Secret; required with "
            "an s3:// store (a local store generates one into its home)."
        ),
    )
    ingest_dataset: str = Field(
        "ingested", description="Dataset that streamed documents and studies are written to."
    )
    met_version: str = Field("", description="Entity tree version to load; the latest when empty.")
    met_build_if_missing: bool = Field(
        False, description="Build the entity tree (about 30 s) when the store has none."
    )
    ner_model_uri: str = Field(
        "",
        description=(
            "NER model for the hybrid tagger: a key prefix in the store (models/ner is the "
            "newest trained one), s3://bucket/prefix, or a local folder; empty tags with the "
            "dictionary only."
        ),
    )
    model_cache_dir: Path = Field(
        Path(".medxiaohe/cache"), description="Models from the store are downloaded here."
    )
    model_max_download_gb: float = Field(
        200.0, gt=0, description="A model larger than this is refused before its download."
    )

    # model predictor (`medxiaohe model serve`)
    predictor_allow: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Predictor callers (certificate common name or token name) -> what they may call: "
            '"ChatCompletions", "ModelInfer" (REST and gRPC v2), or "*".'
        ),
    )
    predictor_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "Bearer tokens for predictor callers that cannot use mTLS: caller name -> token, "
            "from a Secret."
        ),
    )
    predictor_image_prefix: str = Field(
        "",
        description="s3://bucket/prefix/ that s3:// image URLs must lie under; empty refuses them.",
    )
    predictor_max_body_mb: int = Field(32, ge=1, description="Largest request body, MiB.")
    predictor_max_images: int = Field(8, ge=0, description="Most images in one request.")
    predictor_max_image_pixels: int = Field(
        12_000_000, ge=1, description="Most pixels in one image (width x height)."
    )
    predictor_max_tokens: int = Field(
        4096, ge=1, description="Largest max_tokens / max_completion_tokens a request may ask."
    )
    predictor_max_pending: int = Field(
        32, ge=1, description="Generation requests in flight; more get 429 with Retry-After."
    )

    # how the report and rubric services authenticate to their model endpoints
    model_client_cert: Path | None = Field(
        None,
        description=(
            "Client certificate (PEM, from the platform CA) the report and rubric services "
            "present to their model endpoint; its common name is the caller the predictor's "
            "allow list names."
        ),
    )
    model_client_key: Path | None = Field(None, description="The client certificate's key.")

    # rubric grading
    rubric_judge_url: str = Field(
        "",
        description=(
            "OpenAI-compatible judge for the model grader, up to /v1 (this platform's predictor: "
            "https://host:8080/openai/v1); empty grades with the deterministic grader alone."
        ),
    )
    rubric_judge_model: str = Field("", description="The judge's model name in requests.")
    rubric_judge_api_key: SecretStr = Field(
        SecretStr(""), description="Bearer token for the judge, from a Secret."
    )

    # report generation
    report_model_url: str = Field(
        "",
        description=(
            "OpenAI-compatible endpoint of the report's vision-language model, up to /v1; empty "
            "uses the in-process model (local_model_uri)."
        ),
    )
    report_model_name: str = Field("", description="The report model's name in requests.")
    report_model_api_key: SecretStr = Field(
        SecretStr(""), description="Bearer token for the report model, from a Secret."
    )
    report_evidence_index: str = Field(
        "",
        description=(
            "Evidence index reports are grounded in when a request names none; empty offers "
            "no evidence search to such requests."
        ),
    )
    local_model_uri: str = Field(
        "",
        description=(
            "A model loaded in this process (a folder, s3://bucket/prefix or a store prefix) "
            "for the report service when its URL is empty (and the rubric judge only if its "
            "card says it may judge); `medxiaohe up` sets it."
        ),
    )

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")

    ingestion: ServiceSettings = Field(
        default_factory=ServiceSettings, description="The ingestion service: its caller allow-list."
    )
    evidence: ServiceSettings = Field(
        default_factory=ServiceSettings, description="The evidence service: its caller allow-list."
    )
    report: ServiceSettings = Field(
        default_factory=ServiceSettings, description="The report service: its caller allow-list."
    )
    rubric: ServiceSettings = Field(
        default_factory=ServiceSettings, description="The rubric service: its caller allow-list."
    )

    @model_validator(mode="after")
    def _budgets_add_up(self) -> Settings:
        if self.max_upload_mb > self.upload_spool_mb:
            raise ValueError("max_upload_mb must not exceed upload_spool_mb (where it spools)")
        return self

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Read the environment (once, at start); keyword overrides win (CLI flags)."""
        return cls(**overrides)  # type: ignore[arg-type]

    def check_transport(self) -> None:
        """Refuse plaintext to the store or the broker beyond this machine, unless allowed."""
        if self.allow_plaintext_backends:
            return
        plain = []
        if self.store_uri.startswith("s3://") and not self.s3_secure:
            plain.append(("the object store", f"//{self.s3_endpoint}", "MEDXIAOHE_S3_SECURE"))
        for name, url in (
            ("the broker", self.broker_url),
            ("the result backend", self.result_backend),
        ):
            if url.startswith("redis://"):
                plain.append((name, url[len("redis:") :], "a rediss:// URL"))
        for what, address, fix in plain:
            host = urlsplit(address).hostname or ""
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise InvalidInput(
                    f"{what} at {host or '(no host)'} would be reached in plaintext: use TLS "
                    f"({fix}) or set MEDXIAOHE_ALLOW_PLAINTEXT_BACKENDS"
                )

    def service(self, name: ServiceName) -> ServiceSettings:
        settings: ServiceSettings = getattr(self, name)
        return settings
