"""Joining a Ray cluster from a driver cp_dist starts itself (`data prepare --engine ray`, `serve`)."""

from __future__ import annotations

import os
import secrets

import ray

from cp_dist.errors import UserError


def init_ray(address: str | None = None, **init_kwargs) -> None:
    """ray.init, with the mistake Ray reports worst made a clear error: a cluster started with token
    authentication (Ray's default for `ray start` once ~/.ray/auth_token exists) refuses a driver
    whose shell lacks RAY_AUTH_MODE=token, and ray.init then says only, 20 s later, that it could not
    connect. Without an address (none, "auto", "local") Ray finds the token by itself."""
    try:
        ray.init(address=address, **init_kwargs)
    except (ConnectionError, ray.exceptions.AuthenticationError) as err:
        target = address or os.environ.get("RAY_ADDRESS")
        if target in (None, "", "auto", "local") or os.environ.get("RAY_AUTH_MODE") == "token":
            raise
        raise UserError(
            f"could not join the Ray cluster at {target} ({type(err).__name__}): is one running there? If it "
            "was started with token authentication, export RAY_AUTH_MODE=token here too, with its token in "
            "~/.ray/auth_token, the file RAY_AUTH_TOKEN_PATH names, or RAY_AUTH_TOKEN (cluster/README.md, step 1)"
        ) from err


def private_token_env() -> dict[str, str]:
    """The environment of a throwaway local Ray (tests, benchmarks): token authentication on, as
    users run it, with a token of its own in RAY_AUTH_TOKEN, so ~/.ray is neither read nor written."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
