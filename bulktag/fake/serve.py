"""``bulktag serve-fake``: the command's flags, and a fake Glance (or IMS) built from them and
served until interrupted. The fakes themselves are in :mod:`bulktag.fake.glance` and
:mod:`bulktag.fake.ims`; this module only wires flags to them."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bulktag.fake.glance import FakeGlance, FakeGlanceConfig, serve
from bulktag.fake.ims import FakeIms, FakeImsConfig
from bulktag.fake.limiters import Refusal, parse_limiter


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bulktag serve-fake`` flags; turn the parsed namespace into a config with
    :func:`config_from_args`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9292, help="port (0 = any free port)")
    parser.add_argument("--token", help="require this X-Auth-Token on every request")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument(
        "--write-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="more seconds on each tag write (a slow database: writes lag, reads stay quick)",
    )
    parser.add_argument(
        "--fail-503",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of answering 503 instead of doing the work",
    )
    parser.add_argument(
        "--fail-429",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of answering 429 instead of doing the work",
    )
    parser.add_argument("--retry-after", help="Retry-After value sent with 413/429/503")
    parser.add_argument(
        "--capacity",
        type=float,
        metavar="RPS",
        help="requests per second admitted (a token bucket holding one second's worth); "
        "beyond it refuse with --limiter-status",
    )
    parser.add_argument(
        "--limiter",
        type=_limiter_spec,
        metavar="SPEC",
        help="a gateway limit to rehearse: bucket:RATE[:BURST], fixed:LIMIT[:PERIOD], "
        "sliding:LIMIT[:PERIOD], concurrency:LIMIT:SECONDS, queue:RATE[:MAX_WAIT] or "
        "schedule:T=RATE,T=RATE,... (T in seconds after the server starts)",
    )
    parser.add_argument(
        "--limiter-status",
        type=int,
        choices=(503, 429),
        help="what --capacity and --limiter refuse with: 503, or 429 APIGW.0308 as Huawei's "
        "gateway does [default 503; 429 with --api ims]",
    )
    parser.add_argument(
        "--outage",
        type=_outage_span,
        metavar="START:END",
        help="refuse everything with 503 from START to END seconds after the server starts "
        "(END may be inf)",
    )
    parser.add_argument(
        "--unknown-every",
        type=int,
        default=0,
        metavar="N",
        help="every Nth distinct image id is unknown (404)",
    )
    parser.add_argument("--seed", type=int, help="seed for the injected failures")
    parser.add_argument(
        "--api",
        choices=("glance", "ims"),
        default="glance",
        help="ims: also serve Huawei IMS's key/value tag API (at most 10 tags per image; "
        "above --capacity answer 429 APIGW.0308)",
    )
    parser.add_argument(
        "--project-id", help="with --api ims: refuse (403) tag calls for any other project"
    )


def _limiter_spec(text: str) -> str:
    """Check ``--limiter`` now, so a typo is a usage error (exit 2), not a traceback later."""
    try:
        parse_limiter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _outage_span(text: str) -> tuple[float, float]:
    start, _, end = text.partition(":")
    try:
        span = (float(start), float(end))
    except ValueError:
        span = (-1.0, -1.0)
    if not 0 <= span[0] < span[1]:
        raise argparse.ArgumentTypeError(
            f"expected START:END in seconds after the server starts, START < END: {text!r}"
        )
    return span


def config_from_args(args: argparse.Namespace) -> FakeGlanceConfig:
    """The config described by flags added with :func:`add_serve_arguments`."""
    kind = FakeImsConfig if getattr(args, "api", "glance") == "ims" else FakeGlanceConfig
    # Each kind's gateway has its own refusal (IMS: 429) unless the flag says otherwise.
    status = getattr(args, "limiter_status", None) or kind.capacity_status
    spec = getattr(args, "limiter", None)
    common = {
        "token": args.token,
        "latency": args.latency,
        "write_latency": args.write_latency,
        "fail_503": args.fail_503,
        "fail_429": args.fail_429,
        "retry_after": args.retry_after,
        "capacity": args.capacity,
        "capacity_status": status,
        "limiter": parse_limiter(spec, Refusal(status)) if spec else None,
        "outage": getattr(args, "outage", None),
        "unknown_every": args.unknown_every,
        "seed": args.seed,
    }
    if kind is FakeImsConfig:
        return FakeImsConfig(**common, project_id=args.project_id)
    return FakeGlanceConfig(**common)


def make_fake(config: FakeGlanceConfig) -> FakeGlance:
    """The fake that ``config`` describes: a FakeIms for an IMS config, else a FakeGlance."""
    return FakeIms(config) if isinstance(config, FakeImsConfig) else FakeGlance(config)


async def serve_forever(config: FakeGlanceConfig, host: str, port: int) -> None:
    """Serve a fake built from ``config`` until cancelled, announcing its URL on stderr."""
    fake = make_fake(config)
    name = "IMS" if type(fake) is not FakeGlance else "Glance"
    async with serve(fake, host, port) as url:
        needs_token = config.token is not None or config.token_validator is not None
        required = "required" if needs_token else "not required"
        print(f"fake {name} listening on {url} (token: {required})", file=sys.stderr, flush=True)
        await asyncio.Event().wait()  # until the caller cancels us
