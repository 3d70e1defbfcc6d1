"""The explorer's web app: FastAPI on uvicorn, JSON endpoints over ``SparseCBM``, one static page.

    GET  /                    the page (static/index.html)
    GET  /api/model           classes, concepts, whether SALF-CBM is there, the gallery's size
    GET  /api/gallery         ?offset=&limit=: gallery images and their true labels
    GET  /api/image/{id}      the image as the backbone sees it (its centred square), PNG
    POST /api/upload          the request body is an image file; answers its id (kept in memory only)
    POST /api/explain         {image, box? or point?, concept?, beta?, top?}: the CBM's and SALF-CBM's explanations,
                              the region's heatmaps, and the prediction after the edit

Bad input is a 400 (404 for an unknown image) whose JSON ``error`` names the problem; the page shows
it and the server keeps running. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from sparse_cbm.trained.images import ModelInputError
from sparse_cbm_app.explorer.images import ImageStore, concept_list, heat_png, top_classes

STATIC = Path(__file__).parent / "static"
POINT_RADIUS = 9 / 64  # a clicked point's disc, in shares of the square's side (spatial.radius: 9 of 64 px)
log = logging.getLogger(__name__)


class ExplainRequest(BaseModel):
    image: str
    box: Optional[List[float]] = Field(None, description="x0, y0, x1, y1 in pixels of the image's square")
    point: Optional[List[float]] = Field(None, description="x, y: a disc around it, a tenth of the square's side wide")
    concept: Optional[str] = None
    beta: float = 0.0
    top: int = Field(3, ge=1, le=20)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(model) -> FastAPI:
    """The explorer on a loaded ``SparseCBM``."""
    from sparse_cbm.spatial.regions import box_region, point_region

    app = FastAPI(title="sparse-cbm explorer", docs_url=None, redoc_url=None)  # no CDN-hosted API docs
    store = ImageStore(model)
    compute = threading.Lock()  # one model computation at a time: torch already uses every core

    @app.exception_handler(ModelInputError)
    async def bad_input(request: Request, exc: ModelInputError):
        return _error(400, str(exc))

    @app.exception_handler(KeyError)
    async def unknown(request: Request, exc: KeyError):
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.get("/")
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/model")
    def describe():
        return {"classes": model.classes, "concepts": model.concepts, "spatial_concepts": model.spatial_concepts,
                "spatial": model.spatial is not None, "summary": repr(model),
                "gallery": {"name": getattr(model.gallery, "name", None),
                            "count": len(model.gallery) if model.gallery is not None else 0}}

    @app.get("/api/gallery")
    def gallery(offset: int = 0, limit: int = 60):
        count, items = store.gallery_page(max(offset, 0), min(max(limit, 1), 500))
        return {"count": count, "items": items}

    @app.get("/api/image/{key}")
    def image(key: str):
        return Response(store.png(key.removesuffix(".png")), media_type="image/png")

    @app.post("/api/upload")
    async def upload(request: Request):
        key = store.add_upload(await request.body())
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
                region, described = point_region((side, side), req.point, POINT_RADIUS * side), "point"
        except ValueError as exc:
            raise ModelInputError(str(exc)) from None
        with compute:
            if entry.cbm is None:
                entry.cbm = model.explain(entry.square, top=5)
            out = {"image": req.image, "truth": entry.label, "side": side,
                   "cbm": {"prediction": entry.cbm.prediction, "probability": round(entry.cbm.probability, 4),
                           "ranking": entry.cbm.ranking, "concepts": concept_list(entry.cbm.concepts),
                           "classes": top_classes(entry.cbm.probabilities)}}
            if model.spatial is None:
                return out
            if entry.features is None:
                entry.features = model.feature_maps(entry.square)
            edits = None
            if req.concept:
                model.concept_index(req.concept)  # an unknown concept is an error even at beta 0
                edits = {req.concept: req.beta} if req.beta else None
            r = model.explain_region(entry.square, region, top=req.top, edits=edits, features=entry.features)
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
    uvicorn.run(create_app(model), host=host, port=port, log_level="warning")
