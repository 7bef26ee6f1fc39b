"""Which parts of the store each component may read and write: one S3 credential per component,
each limited to the key prefixes it needs (under the store root), so a compromised pod reaches
only its own part. Training reads the corpus and writes runs and models, never uploads or the
quarantine; no service writes ``models/``; raw uploads are read by ingestion, the worker (bulk
files), the report service and the predictor (images), nothing else.

The table renders as IAM policies for MinIO or AWS (``medxiaohe store policies``) and as
SeaweedFS identities (which the tests run against)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput


@dataclass(frozen=True)
class Access:
    read: tuple[str, ...]  # prefixes it may read and list
    write: tuple[str, ...] = ()  # prefixes it may write and delete (publish reads them too)

    def __post_init__(self) -> None:
        if not set(self.write) <= set(self.read):
            raise InvalidInput("a component reads every prefix it writes (publish checks first)")


COMPONENTS: dict[str, Access] = {
    "ingestion": Access(
        read=("met/", "models/", "uploads/callers/", "corpus/", "quarantine/"),
        write=("met/", "uploads/callers/", "corpus/", "quarantine/"),
    ),
    "worker": Access(
        read=("met/", "models/", "uploads/bulk/", "corpus/", "quarantine/"),
        write=("corpus/", "quarantine/"),
    ),
    "evidence": Access(read=("met/", "evidence/"), write=("evidence/",)),
    "report": Access(
        read=("met/", "models/", "evidence/", "report-templates/", "reports/", "uploads/callers/"),
        write=("report-templates/", "reports/"),
    ),
    "rubric": Access(read=("met/", "models/", "rubrics/"), write=("rubrics/",)),
    "model": Access(read=("models/", "uploads/callers/")),
    "training": Access(
        read=(
            "met/",
            "models/",
            "corpus/",
            "mixtures/",
            "synthesis/",
            "sft-data/",
            "trajectories/",
            "rubrics/",
            "runs/",
            "eval-runs/",
            "decontamination/",
        ),
        write=(
            "models/",
            "mixtures/",
            "synthesis/",
            "sft-data/",
            "runs/",
            "eval-runs/",
            "decontamination/",
        ),
    ),
}


def _root(root: str) -> str:
    return root.strip("/") + "/" if root.strip("/") else ""


def iam_policy(component: str, bucket: str, root: str = "") -> dict[str, Any]:
    """The component's IAM policy (MinIO ``mc admin policy create``, or AWS IAM) for a store
    at ``s3://bucket/root``."""
    access = COMPONENTS[component]
    base = _root(root)

    def objects(prefixes: tuple[str, ...]) -> list[str]:
        return [f"arn:aws:s3:::{bucket}/{base}{p}*" for p in prefixes]

    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": objects(access.read)},
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [f"{base}{p}*" for p in access.read]}},
        },
        {
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
        },
    ]
    if access.write:
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                "Resource": objects(access.write),
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def seaweedfs_identities(
    bucket: str, root: str, credentials: Mapping[str, tuple[str, str]]
) -> dict[str, Any]:
    """SeaweedFS's ``-s3.config`` identities: each component's (access key, secret key)
    allowed what the table says, and nothing at the bucket level."""
    base = f"{bucket}/{_root(root)}"
    identities = []
    for name, (access_key, secret_key) in credentials.items():
        access = COMPONENTS[name]
        actions = [f"{verb}:{base}{p}*" for p in access.read for verb in ("Read", "List")]
        actions += [f"Write:{base}{p}*" for p in access.write]
        identities.append(
            {
                "name": name,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": actions,
            }
        )
    return {"identities": identities}
