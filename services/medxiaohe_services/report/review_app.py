"""The review web app: a worklist of reports, a report's page (its images with every finding's
box, each sentence with its verdict and reasons, citations that open their passage with the
quoted span marked, omissions, the decision trace as a timeline), and signing.

Served over HTTPS by the process that runs the report service. Every path, unknown ones too,
answers 401 to a caller that is neither a verified client certificate nor a known bearer token,
and 403 to one without ``ReviewReports`` in the report service's allow list; no page says
anything before that. Signing is a JSON POST from the page's script (a cross-site form cannot
send one without a CORS preflight, which nothing here answers), recorded in the store with every
change and logged with who signed which report and how many changes, never their text."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from medxiaohe.common.errors import InvalidInput, MedxError, NotFound
from medxiaohe.evidence.registry import IndexRegistry
from medxiaohe.report.review import REVIEW, Change, review_status, sign
from medxiaohe.report.store import (
    ReportKeys,
    load_report,
    load_review,
    read_report,
    report_ids,
    report_image,
    report_images,
    save_review,
)
from medxiaohe.storage import ArtifactStore

log = logging.getLogger("medxiaohe.review")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
SCRIPT = Path(__file__).parent / "templates" / "review.js"
WORKLIST_LIMIT = 200
MAX_BODY = 1 << 20
STATUSES = ("flagged", "unreviewed", "signed")


def authenticated(request: Request, tokens: Mapping[str, str]) -> str:
    """The caller: the verified certificate's name, else the name of a matching bearer token."""
    tls = request.scope.get("extensions", {}).get("tls", {})
    if tls.get("client_cn"):
        return str(tls["client_cn"])
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        for name, expected in tokens.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                return name
    return ""


def change_of(item: dict[str, Any]) -> Change:
    """One change as the page sends it: section, index, action, and the new text of an edit."""
    action = str(item["action"])
    return Change(
        str(item["section"]), int(item["index"]), action, after=str(item.get("after", ""))
    )


def create_app(
    store: ArtifactStore,
    keys: ReportKeys,
    indexes: IndexRegistry,
    allow: Mapping[str, Sequence[str]],
    tokens: Mapping[str, str],
) -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        caller = authenticated(request, tokens)
        if not caller:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if REVIEW not in allow.get(caller, ()):
            return Response(f"caller {caller!r} lacks {REVIEW}", status_code=403)
        request.state.caller = caller
        try:
            response = await call_next(request)
        except MedxError as exc:  # the platform's errors, said as HTTP
            code = {NotFound: 404, InvalidInput: 400}.get(type(exc), 409)
            return Response(str(exc), status_code=code)
        response.headers["Cache-Control"] = "no-store"  # pages carry a patient's report
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; frame-ancestors 'none'"
        )
        return response

    def current(report_id: str) -> tuple[Any, Any]:
        """The report as last signed (or as generated), and its signature."""
        signed = load_review(store, report_id, keys)
        return signed or (read_report(store, report_id, keys), None)

    @app.get("/review.js")
    def script() -> Response:
        return Response(SCRIPT.read_bytes(), media_type="text/javascript")

    @app.get("/")
    def root() -> RedirectResponse:
        return RedirectResponse("reports")

    @app.get("/reports", response_class=HTMLResponse)
    def worklist(request: Request, status: str = "") -> HTMLResponse:
        if status and status not in STATUSES:
            raise HTTPException(400, f"status is one of {', '.join(STATUSES)}")
        rows = []
        for rid in report_ids(store):
            report, signature = current(rid)
            state = "signed" if signature else review_status(report.sentences())
            if not status or status == state:
                rows.append({"id": rid, "created": report.created, "status": state,
                             "study": report.study_id, "template": report.template_id})  # fmt: skip
        rows.sort(key=lambda r: r["created"], reverse=True)
        context = {"rows": rows[:WORKLIST_LIMIT], "status": status, "statuses": STATUSES}
        return TEMPLATES.TemplateResponse(request, "worklist.html", context)

    @app.get("/reports/{report_id}", response_class=HTMLResponse)
    def page(request: Request, report_id: str) -> HTMLResponse:
        generated, trace = load_report(store, report_id, keys)
        report, signature = load_review(store, report_id, keys) or (generated, None)
        images = report_images(store, report_id, keys)
        for n, image in enumerate(images):
            image["n"] = n
            image["boxes"] = [
                {"label": f.text, "assertion": f.assertion, "box": f.region.box}
                for f in report.findings
                if f.region
                and (f.region.image_id, f.region.frame) == (image["image_id"], image["frame"])
            ]
        context = {
            "report": report,
            "signature": signature,
            "trace": trace,
            "images": images,
            "status": "signed" if signature else review_status(report.sentences()),
        }
        return TEMPLATES.TemplateResponse(request, "report.html", context)

    @app.get("/reports/{report_id}/images/{n}")
    def image(report_id: str, n: int) -> Response:
        return Response(report_image(store, report_id, n), media_type="image/png")

    @app.get("/reports/{report_id}/citations/{n}", response_class=HTMLResponse)
    def citation(request: Request, report_id: str, n: int) -> HTMLResponse:
        report, _ = current(report_id)
        if not 0 <= n < len(report.citations):
            raise HTTPException(404, "no such citation")
        cited = report.citations[n]
        passage = indexes.get(cited.index_name, cited.index_version).passage(cited.passage_id)
        if passage is None:
            raise HTTPException(404, "the cited passage is not in its index version")
        start = max(0, min(len(passage.text), cited.start - passage.start))
        end = max(start, min(len(passage.text), cited.end - passage.start))
        context = {"citation": cited, "passage": passage, "report_id": report_id,
                   "before": passage.text[:start], "quoted": passage.text[start:end],
                   "after": passage.text[end:]}  # fmt: skip
        return TEMPLATES.TemplateResponse(request, "citation.html", context)

    @app.post("/reports/{report_id}/sign")
    async def signing(request: Request, report_id: str) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            raise HTTPException(415, "send the review as application/json")
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise HTTPException(413, "the review is too large")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise HTTPException(413, "the review is too large")
        try:
            changes = [change_of(c) for c in json.loads(body).get("changes", [])]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise HTTPException(
                400, "a review is {changes: [{section, index, action, after}]}"
            ) from None
        caller: str = request.state.caller
        # as stored: pseudonyms for the caller's ids
        signed = load_review(store, report_id)
        base = signed[0] if signed else read_report(store, report_id)
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        reviewed, signature = sign(base, changes, caller, now)
        saved = save_review(store, reviewed, signature)
        audit = {"caller": caller, "report_id": report_id, "version": saved.version}
        log.info("report signed", extra={"event": "sign", **audit, "changes": len(changes)})
        return JSONResponse({**audit, "status": "final", "signed_at": now})

    return app
