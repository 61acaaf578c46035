"""A Ray Serve HTTP endpoint for a finished run: ranking requests and raw candidates, as JSON.

    POST /rank    {"user": {field: value, ...}, "items": [item id, ...]}  -> {"scores": [...]}
    POST /score   {"candidates": [{field: value, ...}, ...]}              -> {"scores": [...]}
    GET  /health  200 while the replica lives
    GET  /ready   200 and what is served, once the replica has scored its warm-up request

Each request is parsed and encoded on its own, so a bad one fails alone: 400 (413 for too many
candidates, 404/405 for a wrong route or method) with {"error": one line naming the problem}. The
encoded requests then share forward passes: those arriving within `batch_wait_ms` of each other, up
to `max_batch_size` of them, run as one batch (serve.batch), off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import ray
import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from cp_dist.errors import UserError
from cp_dist.ray_cluster import init_ray
from cp_dist.serving.ranking import Ranker, concat_inputs
from cp_dist.serving.settings import ServeSettings

APP_NAME = "cp-dist"


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _kind(value: object) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _scalar(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def parse_body(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # ValueError: bad JSON, or a 5,000-digit number
        raise BadRequest(f"the body is not JSON ({err})") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"the body is {_kind(payload)}; expected a JSON object")
    return payload


def _array(payload: dict, key: str, what: str, max_candidates: int) -> list:
    if key not in payload:
        raise BadRequest(f"missing {key!r}: {what}")
    values = payload[key]
    if not isinstance(values, list):
        raise BadRequest(f"{key!r} is {_kind(values)}; expected {what}")
    if len(values) > max_candidates:
        raise BadRequest(f"{len(values)} {key}; at most {max_candidates} per request (max_candidates)", status=413)
    return values


def _fields(values: object, where: str) -> dict:
    if not isinstance(values, dict):
        raise BadRequest(f"{where} is {_kind(values)}; expected an object of field values")
    for name, value in values.items():
        if not (_scalar(value) or value is None):
            raise BadRequest(f"{where} field {name!r} is {_kind(value)}; expected a string or a number")
    return values


def parse_rank(payload: dict, max_candidates: int) -> tuple[dict, list]:
    """(user, items) of a /rank body, or BadRequest naming what is wrong."""
    if "user" not in payload:
        raise BadRequest("missing 'user': an object of the user's fields")
    user = _fields(payload["user"], "'user'")
    items = _array(payload, "items", "an array of item ids", max_candidates)
    for i, item in enumerate(items):
        if not _scalar(item):
            raise BadRequest(f"items[{i}] is {_kind(item)}; expected an item id (a string or a number)")
    return user, items


def parse_score(payload: dict, max_candidates: int) -> list[dict]:
    """The candidates of a /score body, or BadRequest naming what is wrong."""
    candidates = _array(payload, "candidates", "an array of objects of field values", max_candidates)
    return [_fields(c, f"candidates[{i}]") for i, c in enumerate(candidates)]


@serve.deployment
class RankingService:
    """One replica: the run's model, the item catalogue and the request batching."""

    def __init__(self, run_dir: str, data_dir: str, settings: ServeSettings):
        torch.set_num_threads(settings.threads)
        self.settings, self.run_dir = settings, run_dir
        self.ranker = Ranker.from_run(Path(run_dir), Path(data_dir), settings.device)
        if settings.compile:
            self.ranker.scorer.model = torch.compile(self.ranker.scorer.model, dynamic=True)
        self._forward.set_max_batch_size(settings.max_batch_size)
        self._forward.set_batch_wait_timeout_s(settings.batch_wait_ms / 1e3)
        items = self.ranker.catalogue.values[self.ranker.catalogue.key.text_column].to_pylist()[1:]
        user = {f.name: 0 for _, f in self.ranker.request_fields}
        for count in (1, 8):  # compiled, both kinds of graph: torch.compile treats a batch of 1 apart
            self.ranker.score(user, items[:count])
        # per replica: their ratio is how much batching happens (GET /ready reaches one replica)
        self.requests_scored = self.forward_passes = 0

    async def __call__(self, request: Request) -> JSONResponse:
        path, method = request.url.path.rstrip("/") or "/", request.method
        routes = {"/rank": "POST", "/score": "POST", "/health": "GET", "/ready": "GET"}
        if path not in routes:
            return JSONResponse({"error": f"no route {path}; expected one of {', '.join(routes)}"}, status_code=404)
        if method != routes[path]:
            return JSONResponse({"error": f"{method} {path}: expected {routes[path]}"}, status_code=405)
        if path == "/health":
            return JSONResponse({"status": "ok"})
        if path == "/ready":
            return JSONResponse(self.describe())
        try:
            inputs = self._inputs(path, parse_body(await self._body(request)))
        except (BadRequest, UserError) as err:
            return JSONResponse({"error": str(err)}, status_code=getattr(err, "status", 400))
        scores = await self._forward(inputs) if inputs else np.zeros(0)
        return JSONResponse({"scores": scores.tolist()})

    async def _body(self, request: Request) -> bytes:
        """The body, refused (413) past settings.max_body_bytes before it is read when the client
        says its length, or once read when it does not."""
        limit = self.settings.max_body_bytes
        too_large = BadRequest(f"the body is over {limit:,} bytes (max_candidates {self.settings.max_candidates})", status=413)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = await request.body()
        if len(body) > limit:
            raise too_large
        return body

    def _inputs(self, path: str, payload: dict) -> tuple[torch.Tensor, ...] | None:
        """The model inputs of a /rank or /score request; None for a valid request with no candidates."""
        if path == "/rank":
            user, items = parse_rank(payload, self.settings.max_candidates)
            if not items:
                self.ranker.encode_user(user)  # still an error if the user is
                return None
            return self.ranker.inputs(user, items)
        candidates = parse_score(payload, self.settings.max_candidates)
        return self.ranker.scorer.inputs(candidates) if candidates else None

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def _forward(self, requests: list[tuple[torch.Tensor, ...]]) -> list[np.ndarray]:
        scorer = self.ranker.scorer
        inputs = concat_inputs(requests, scorer.pad_token_id if scorer.reads_text else 0)
        scores = await asyncio.to_thread(scorer.probabilities, *inputs)  # torch frees the GIL: parsing goes on
        self.requests_scored += len(requests)
        self.forward_passes += 1
        return np.split(scores, np.cumsum([len(r[0]) for r in requests])[:-1])

    def describe(self) -> dict:
        return {"status": "ready", "run": self.run_dir, "reads_text": self.ranker.scorer.reads_text,
                "items": len(self.ranker.catalogue), "item_key": self.ranker.catalogue.key.name,
                "user_fields": [f.name for _, f in self.ranker.request_fields], "settings": asdict(self.settings),
                "requests_scored": self.requests_scored, "forward_passes": self.forward_passes}


def start(run_dir: Path, data_dir: Path, settings: ServeSettings) -> str:
    """Checks the run here (clear errors before anything starts: the model and catalogue are built
    once in this process), then deploys it on the Ray cluster this process is connected to, the one
    RAY_ADDRESS names, or a new local one; returns the endpoint's URL."""
    ranker = Ranker.from_run(run_dir, data_dir)
    if ranker.scorer.reads_text and not settings.with_plm:
        raise UserError(f"{run_dir}: a with-PLM run runs its language model on every request; serve it with "
                        "--with-plm, or serve a CTR-only run (train-ctr, finetune --without-plm)")
    if not ray.is_initialized():
        init_ray(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    service = RankingService.options(num_replicas=settings.replicas, max_ongoing_requests=settings.max_ongoing_requests,
                                     ray_actor_options={"num_cpus": settings.replica_cpus,
                                                        "num_gpus": 1 if settings.device == "cuda" else 0})
    serve.run(service.bind(str(run_dir.resolve()), str(data_dir.resolve()), settings), name=APP_NAME, route_prefix="/")
    return f"http://{settings.host}:{settings.port}"


def serve_until_stopped(run_dir: Path, data_dir: Path, settings: ServeSettings) -> None:
    """`cp-dist serve`: starts the endpoint, serves until SIGINT or SIGTERM, then removes it (and
    the local Ray cluster it started; on a shared cluster, only its own application)."""
    shared_cluster = bool(os.environ.get("RAY_ADDRESS"))
    url = start(run_dir, data_dir, settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after start: ray.init installs a SIGTERM handler of its own
        signal.signal(sig, lambda *_: stop.set())
    print(f"serving {run_dir} at {url} (POST /rank, POST /score, GET /health, GET /ready); Ctrl-C stops", flush=True)
    try:
        stop.wait()
    finally:
        serve.delete(APP_NAME)
        if not shared_cluster:
            serve.shutdown()
            ray.shutdown()
