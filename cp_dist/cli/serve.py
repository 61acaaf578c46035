"""`cp-dist serve`: a finished run behind a Ray Serve HTTP endpoint (cp_dist/serving/endpoint.py)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cp_dist.serving.settings import ServeSettings


def _serve(args: argparse.Namespace) -> None:
    from cp_dist.serving.endpoint import serve_until_stopped

    settings = ServeSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeSettings)})
    serve_until_stopped(args.run, args.data, settings)


def add_commands(commands) -> None:
    defaults = ServeSettings()
    p = commands.add_parser(
        "serve",
        help="serve a finished run over HTTP (Ray Serve): ranking requests by user and item ids",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Serves a train-ctr or finetune run on a Ray Serve endpoint until Ctrl-C. Connects to the Ray
cluster named by RAY_ADDRESS, or starts a local one. Routes (JSON):

  POST /rank    {"user": {"user_id": "90", "age": "60", ...}, "items": ["347", "506", ...]}
                -> {"scores": [...]}  one user's fields (every field not on the item side), the
                candidates by item id; item fields come from the prepared data, unknown items
                score as out-of-vocabulary
  POST /score   {"candidates": [{field: value, ...}, ...]} -> {"scores": [...]}  raw rows
  GET  /health  liveness;  GET /ready  what is served, once the warm-up request has run

A bad request gets 400 (413: too many candidates) with {"error": "..."} naming the problem.
Requests arriving within --batch-wait-ms share one forward pass, up to --max-batch-size of them.

  cp-dist serve runs/quickstart/seed0/clickprompt-no-plm --data ~/.cache/cp_dist/prepared/ml-100k
  curl -s 127.0.0.1:8000/rank -d '{"user": {"user_id": "90", "age": "60", "gender": "male",
       "occupation": "educator", "zip_code": "78155"}, "items": ["347", "506"]}'""",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="a finished train-ctr or finetune run directory")
    p.add_argument("--data", type=Path, required=True, help="the prepared directory it was trained on")
    p.add_argument("--host", default=defaults.host, help="the endpoint's address (default: %(default)s). Ray's own ports listen on the "
                   "host's address whatever this says: on a machine others can reach, run inside a network "
                   "namespace or behind a firewall")
    p.add_argument("--port", type=int, default=defaults.port, help="(default: %(default)s)")
    p.add_argument("--replicas", type=int, default=defaults.replicas, help="model replicas (default: %(default)s)")
    p.add_argument("--replica-cpus", type=float, default=defaults.replica_cpus,
                   help="CPUs Ray reserves per replica (default: %(default)s)")
    p.add_argument("--threads", type=int, default=defaults.threads, help="torch threads per replica (default: %(default)s)")
    p.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size,
                   help="requests per forward pass at most (default: %(default)s)")
    p.add_argument("--max-ongoing-requests", type=int, default=defaults.max_ongoing_requests,
                   help="requests a replica holds at once; the rest wait in the proxy (default: %(default)s)")
    p.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_ms,
                   help="how long a forward pass waits for more requests (default: %(default)s)")
    p.add_argument("--max-candidates", type=int, default=defaults.max_candidates,
                   help="items or candidates per request at most; more get 413 (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device,
                   help="where each replica runs the model (cuda: one GPU per replica; default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the CTR model (a warm-up compiles it)")
    p.add_argument("--with-plm", action="store_true", help="allow serving a with-PLM run (its PLM runs per request)")
    p.set_defaults(handler=_serve)
