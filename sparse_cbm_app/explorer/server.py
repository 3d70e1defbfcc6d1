"""The explorer's web app: FastAPI on uvicorn, JSON endpoints over ``SparseCBM``, one static page.

    GET  /                    the page (static/index.html)
    GET  /api/model           classes, concepts, whether SALF-CBM is there, the gallery's size
    GET  /api/gallery         ?offset=&limit=: gallery images and their true labels
    GET  /api/image/{id}      the image as the backbone sees it (its centred square), PNG
    POST /api/upload          the request body is an image file; answers its id (kept in memory only)
    POST /api/explain         {image, box? or point?, concept?, beta?, top?}: the CBM's and SALF-CBM's explanations,
                              the region's heatmaps, and the prediction after the edit

Bad input is a 400 (404 for an unknown image) whose JSON ``error`` names the problem; the page shows
it and the server keeps running. Binds to 127.0.0.1 unless told otherwise, and then answers only requests
addressed to this machine (a ``Host`` of localhost or 127.0.0.1: no DNS rebinding) and refuses a POST
from a page of another origin.
"""

from __future__ import annotations

import base64
import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from urllib.parse import urlparse

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from sparse_cbm.errors import SparseCbmError
from sparse_cbm.trained.images import ModelInputError
from sparse_cbm_app.explorer.images import (MAX_UPLOAD_BYTES, ImageStore, UnknownImage, concept_list, heat_png,
                                            square_region, top_classes)

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
log = logging.getLogger(__name__)


class ExplainRequest(BaseModel):
    image: str
    box: Optional[List[float]] = Field(None, description="x0, y0, x1, y1 in pixels of the image's square")
    point: Optional[List[float]] = Field(None, description="x, y: the disc of spatial.radius around it")
    concept: Optional[str] = None
    beta: float = 0.0
    top: int = Field(3, ge=1, le=20)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(model, local_only: bool = True) -> FastAPI:
    """The explorer on a loaded ``SparseCBM``; ``local_only``: answer only requests addressed to this machine."""
    from sparse_cbm.spatial.regions import box_region, point_region

    app = FastAPI(title="sparse-cbm explorer", docs_url=None, redoc_url=None)  # no CDN-hosted API docs
    store = ImageStore(model)
    compute = threading.Lock()  # one model computation at a time: torch already uses every core

    @app.exception_handler(ModelInputError)
    async def bad_input(request: Request, exc: ModelInputError):
        return _error(400, str(exc))

    @app.exception_handler(UnknownImage)
    async def unknown(request: Request, exc: UnknownImage):
        return _error(404, str(exc))

    @app.exception_handler(SparseCbmError)
    async def failed(request: Request, exc: SparseCbmError):  # the model or its data failed, not the request
        return _error(500, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.middleware("http")
    async def this_machine_only(request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if local_only and host not in LOCAL_HOSTS:
            return _error(403, f"this explorer answers requests to localhost only, not to {host!r}")
        origin = request.headers.get("origin")
        if request.method == "POST" and origin and urlparse(origin).netloc != request.headers.get("host"):
            return _error(403, f"a page of another origin ({origin}) may not post to this explorer")
        return await call_next(request)

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/model")
    def describe():
        return {"classes": model.classes, "concepts": model.concepts, "spatial_concepts": model.spatial_concepts,
                "spatial": model.spatial is not None, "summary": repr(model), "point_radius": model.point_radius,
                "gallery": {"name": getattr(model.gallery, "name", None), "count": store.gallery_size()}}

    @app.get("/api/gallery")
    def gallery(offset: int = 0, limit: int = 60):
        count, items = store.gallery_page(max(offset, 0), min(max(limit, 1), 500))
        return {"count": count, "items": items}

    @app.get("/api/image/{key}")
    def image(key: str):
        return Response(store.png(key.removesuffix(".png")), media_type="image/png")

    @app.post("/api/upload")
    async def upload(request: Request):
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_UPLOAD_BYTES:
            raise ModelInputError(f"the upload is {declared / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_UPLOAD_BYTES:
                raise ModelInputError(f"the upload is over the limit of {MAX_UPLOAD_BYTES // 2**20} MB")
        key = await run_in_threadpool(store.add_upload, bytes(body))  # decoding must not hold up other requests
        return {"id": key, "side": store.get(key).square.width}

    @app.post("/api/explain")
    def explain(req: ExplainRequest):
        entry = store.get(req.image)
        side = entry.square.width
        region, described = None, "whole image"
        if req.box is not None and req.point is not None:
            raise ModelInputError("give a box or a point, not both")
        try:
            if req.box is not None:
                if len(req.box) != 4:
                    raise ModelInputError(f"a box is four numbers x0, y0, x1, y1; got {len(req.box)}")
                region, described = box_region((side, side), req.box), "box"
            elif req.point is not None:
                if len(req.point) != 2:
                    raise ModelInputError(f"a point is two numbers x, y; got {len(req.point)}")
                region, described = point_region((side, side), req.point, model.point_radius * side), "point"
        except ValueError as exc:
            raise ModelInputError(str(exc)) from None
        if region is not None:
            region = square_region(entry, region)  # the whole image is explained, as the API explains a file
        with compute:
            if entry.cbm is None:
                entry.cbm = model.explain(entry.image, top=5)
            out = {"image": req.image, "truth": entry.label, "side": side,
                   "cbm": {"prediction": entry.cbm.prediction, "probability": round(entry.cbm.probability, 4),
                           "ranking": entry.cbm.ranking, "concepts": concept_list(entry.cbm.concepts),
                           "classes": top_classes(entry.cbm.probabilities)}}
            if model.spatial is None:
                return out
            if entry.features is None:
                entry.features = model.feature_maps(entry.image)
            edits = None
            if req.concept:
                model.concept_index(req.concept)  # an unknown concept is an error even at beta 0
                edits = {req.concept: req.beta} if req.beta else None
            r = model.explain_region(entry.image, region, top=req.top, edits=edits, features=entry.features)
        maps = {name: "data:image/png;base64," + base64.b64encode(heat_png(heat)).decode("ascii")
                for name, heat in r.heatmaps.items()}
        out["salf"] = {"prediction": r.prediction, "probability": round(r.probability, 4), "ranking": r.ranking,
                       "concepts": concept_list(r.concepts), "heatmaps": maps, "classes": top_classes(r.probabilities),
                       "region": described}
        if r.edited_prediction is not None:
            out["edit"] = {"concept": req.concept, "beta": req.beta, "prediction": r.edited_prediction,
                           "probability": round(r.edited_probabilities[r.edited_prediction], 4),
                           "classes": top_classes(r.edited_probabilities)}
        return out

    return app


@contextmanager
def serving(app, host: str = "127.0.0.1") -> Iterator[str]:
    """``app`` on a free port of ``host``, served by uvicorn in a thread (tests and the bench); yields its URL."""
    import socket
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(model, host: str = "127.0.0.1", port: int = 8765) -> None:
    import uvicorn

    print(f"sparse-cbm explorer on http://{host}:{port}  ({model!r}; Ctrl-C stops it)", flush=True)
    uvicorn.run(create_app(model, local_only=host in LOCAL_HOSTS), host=host, port=port, log_level="warning")
