"""`maas serve [MODEL ...]`: serve models over the OpenAI API."""

from __future__ import annotations

import argparse
import re
import signal
from typing import Any

from maas.cli.engine_args import add_engine_args, engine_config
from maas.config import get_settings
from maas.store.builtin import DEFAULT_MODELS


def _bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 6GiB or 800MB)")
    unit = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2).upper()]
    return int(float(m.group(1)) * unit)


def add_parser(sub: Any) -> None:
    """Register the verb."""
    s = get_settings()
    p = sub.add_parser(
        "serve",
        help="serve models over HTTP (OpenAI API; Open Inference Protocol v2 for tensor models)",
        description="Serve models behind the OpenAI API (LLMs, embeddings) and the Open Inference Protocol v2 "
        "(tensor models: /v2/models/NAME/infer). MODEL is a registry name[:tag], a built-in "
        f"name, a .gguf file, or an HF model directory (default: {' and '.join(DEFAULT_MODELS)}). The models named "
        "here load at start-up; any other registry model loads on its first request.",
    )
    p.add_argument(
        "models", nargs="*", metavar="MODEL", help=f"models to serve (default: {' '.join(DEFAULT_MODELS)})"
    )
    p.add_argument("--host", default=s.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=s.port, help="port (default %(default)s)")
    p.add_argument("--served-model-name", default=None, help="API name for the (single) model")
    p.add_argument(
        "--max-loaded-models",
        type=int,
        default=None,
        help="models kept in memory at once; the least recently used idle one is unloaded to make "
        "room (default: 3, or the number of MODELs if more)",
    )
    p.add_argument(
        "--memory-budget",
        type=_bytes,
        default=None,
        help="evict least-recently-used models to keep loaded models under this size (e.g. 6GiB)",
    )
    p.add_argument(
        "--no-registry",
        dest="registry",
        action="store_false",
        help="answer only for the MODELs named here, not for other registry models",
    )
    p.add_argument(
        "--tool-parser",
        choices=["auto", "hermes", "llama3_json", "json"],
        default="auto",
        help="how tool calls are read from LLM output: <tool_call> tags (hermes), Llama 3's JSON, or a "
        "whole-answer JSON call; auto (default) follows each model's chat template",
    )
    _add_access_args(p)
    _add_embedding_args(p)
    _add_tensor_args(p)
    add_engine_args(p)
    p.set_defaults(func=run)


def _add_access_args(p: argparse.ArgumentParser) -> None:
    """Keys, limits, timeouts and logs."""
    a = p.add_argument_group("access and limits")
    a.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="require `Authorization: Bearer KEY` on /v1, /v2/models, gRPC model calls and /admin (repeatable; also MAAS_API_KEYS)")  # fmt: skip
    a.add_argument("--admin-api-key", action="append", default=[], metavar="KEY",
                   help="a key that may also use /admin (repeatable; also MAAS_ADMIN_API_KEYS)")  # fmt: skip
    a.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="keys, one per line; `admin:KEY` for admin keys; # comments")  # fmt: skip
    a.add_argument("--protect-metrics", action="store_true", help="require a key on /metrics too")
    a.add_argument("--max-queued-requests", type=int, default=512,
                   help="requests waiting per model beyond its running batch; more get 429 (default %(default)s)")  # fmt: skip
    a.add_argument("--max-body-size", type=_bytes, default=32 << 20, metavar="SIZE",
                   help="largest request body; larger gets 413 (default 32MiB)")  # fmt: skip
    a.add_argument("--rate-limit-rpm", type=int, default=0, metavar="N",
                   help="requests per minute per API key (or client address without keys); 0 = none")  # fmt: skip
    a.add_argument("--rate-limit-tpm", type=int, default=0, metavar="N",
                   help="prompt + completion tokens per minute per API key (or address); 0 = none")  # fmt: skip
    a.add_argument("--request-timeout", type=float, default=0.0, metavar="SECONDS",
                   help="abort a generation running longer than this (504); 0 = none (default)")  # fmt: skip
    a.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM/SIGINT (to the server or its whole process group): seconds to let running "
                   "requests finish while new ones get 503, then exit 0; a second signal stops at once "
                   "(exit 128+signal) (default %(default)s; 0 = stop at once)")  # fmt: skip
    a.add_argument("--access-log-json", action="store_true",
                   help="one JSON line per request on the maas.access logger (id, model, key id, tokens, latency)")  # fmt: skip


def _add_embedding_args(p: argparse.ArgumentParser) -> None:
    """How encoders batch and run."""
    g = p.add_argument_group("embeddings")
    g.add_argument(
        "--embed-max-batch-size",
        type=int,
        default=64,
        help="sentences per forward pass when batching concurrent requests (default %(default)s)",
    )
    g.add_argument(
        "--embed-max-wait-ms",
        type=float,
        default=1.0,
        help="how long an idle embedder waits for more requests to batch (default %(default)s ms)",
    )
    g.add_argument(
        "--embed-weights",
        choices=["auto", "float32"],
        default="auto",
        help="linear weights for small batches (up to 192 tokens): auto = float16 copies (faster for "
        "short inputs, see docs/benchmarks.md), float32 = float32 everywhere; larger batches always run "
        "in float32 (default %(default)s)",
    )
    g.add_argument(
        "--embed-process",
        action="store_true",
        help="run each encoder in its own process (a crash there cannot take the server down; its "
        "forward passes never wait on the server's GIL) instead of a thread of the server",
    )


def _add_tensor_args(p: argparse.ArgumentParser) -> None:
    """How tensor models batch and run, and the gRPC port."""
    t = p.add_argument_group("tensor models (Open Inference Protocol v2: /v2/models/NAME/infer)")
    t.add_argument("--tensor-backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="auto = onnxruntime for ONNX versions, torch for `maas train` exports (default %(default)s)")  # fmt: skip
    t.add_argument("--tensor-max-batch-size", type=int, default=64, metavar="N",
                   help="rows per forward pass when batching concurrent requests; larger requests get 400 "
                   "(default %(default)s)")  # fmt: skip
    t.add_argument("--tensor-max-wait-ms", type=float, default=0.0, metavar="MS",
                   help="how long a batch waits for more requests before it runs; 0 = it takes what is "
                   "queued (requests arriving during a forward pass still share the next) (default %(default)s)")  # fmt: skip
    t.add_argument("--tensor-preferred-batch-size", type=int, action="append", default=[], metavar="N",
                   help="a batch of this many rows runs at once without waiting (repeatable)")  # fmt: skip
    t.add_argument("--tensor-max-queue", type=int, default=1024, metavar="N",
                   help="requests waiting per tensor model; more get 429 (default %(default)s)")  # fmt: skip
    t.add_argument("--grpc-port", type=int, default=0, metavar="PORT",
                   help="also serve the Open Inference Protocol v2 over gRPC (KServe / Triton clients, e.g. "
                   "tritonclient.grpc) on this port, at --host; default 0 = no gRPC")  # fmt: skip


def _options(args: argparse.Namespace) -> Any:
    from maas.errors import InvalidRequestError
    from maas.server.app import ServerOptions
    from maas.server.auth import KeyRing, read_key_file

    s = get_settings()
    user = [*args.api_key, *s.api_keys.split(",")]
    admin = [*args.admin_api_key, *s.admin_api_keys.split(",")]
    if args.api_key_file:
        try:
            u, a = read_key_file(args.api_key_file)
        except OSError as e:
            raise InvalidRequestError(f"cannot read --api-key-file: {e}") from None
        user, admin = user + u, admin + a
    if args.max_queued_requests < 0:
        raise InvalidRequestError("--max-queued-requests must be >= 0")
    if not 0 <= args.grpc_port <= 65535:
        raise InvalidRequestError("--grpc-port must be within 0..65535 (0 = no gRPC)")
    return ServerOptions(
        keys=KeyRing.build(user, admin, args.protect_metrics),
        max_body_bytes=args.max_body_size,
        max_queued_requests=args.max_queued_requests,
        json_access_log=args.access_log_json,
        requests_per_min=max(0, args.rate_limit_rpm),
        tokens_per_min=max(0, args.rate_limit_tpm),
        request_timeout_s=max(0.0, args.request_timeout),
        grpc_port=args.grpc_port,
        grpc_host=args.host,
        tool_parser=args.tool_parser,
    )


def run(args: argparse.Namespace) -> int:
    """Check the models, then serve until interrupted (they load as the server starts)."""
    from maas.engine.embedding.engine import EmbedOptions
    from maas.engine.tensor.engine import TensorOptions
    from maas.errors import InvalidRequestError
    from maas.server.launch import build_pool, serve
    from maas.store.builtin import ensure_builtins_imported

    if args.max_loaded_models is not None and args.max_loaded_models < 1:
        raise InvalidRequestError("--max-loaded-models must be at least 1")
    if args.embed_max_batch_size < 1 or not 0 <= args.embed_max_wait_ms <= 1000:
        raise InvalidRequestError(
            "--embed-max-batch-size must be >= 1 and --embed-max-wait-ms within 0..1000"
        )
    if args.tensor_max_batch_size < 1 or args.tensor_max_wait_ms < 0 or args.tensor_max_queue < 1:
        raise InvalidRequestError(
            "--tensor-max-batch-size and --tensor-max-queue must be >= 1, --tensor-max-wait-ms >= 0"
        )
    if any(not 1 <= n <= args.tensor_max_batch_size for n in args.tensor_preferred_batch_size):
        raise InvalidRequestError("--tensor-preferred-batch-size must be within 1..--tensor-max-batch-size")
    options = _options(args)  # a bad key file fails before any model loads
    ensure_builtins_imported()
    pool = build_pool(
        args.models or DEFAULT_MODELS,
        engine_config(args),
        served_name=args.served_model_name,
        max_loaded=args.max_loaded_models,
        memory_budget=args.memory_budget,
        use_registry=args.registry,
        embed=EmbedOptions(
            args.embed_max_batch_size, args.embed_max_wait_ms, args.embed_weights, args.embed_process
        ),
        tensor=TensorOptions(
            max_batch_size=args.tensor_max_batch_size,
            max_wait_ms=args.tensor_max_wait_ms,
            preferred=tuple(args.tensor_preferred_batch_size),
            max_queue=args.tensor_max_queue,
            backend=args.tensor_backend,
        ),
    )
    # Until the server listens (and drains on a signal), SIGTERM stops the start-up as Ctrl-C does (exit 130),
    # also as a container's PID 1, which has no default action for it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        pool.preload_sync()
    except BaseException:
        pool.shutdown()  # engines already started stop cleanly before the error is shown
        raise
    return serve(pool, args.host, args.port, args.log_level, options, args.drain_timeout)
