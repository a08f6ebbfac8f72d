"""A real gRPC server and client (Debian's python3-grpcio) for the sidecar's gRPC tests.

No generated stubs: methods are registered with generic handlers and carry raw bytes,
so no protoc is needed.

  grpc_demo.py serve ADDR
      Serves, on plain HTTP/2 (h2c) as every gRPC server does:
        /demo.Echo/Unary         answers the request, with trailing metadata
        /demo.Echo/ServerStream  request "N": N messages "msg-0".."msg-N-1"
        /demo.Echo/Bidi          answers each message with "echo:" + message
        /demo.Echo/Slow          request "MS": sleeps MS ms; answers the deadline the
                                 server saw (seconds left when the call arrived)
        /demo.Echo/NotFound      fails with NOT_FOUND and a message
        /demo.Flaky/*            UNAVAILABLE on the first call of each method, OK after
        /demo.Down/*             always UNAVAILABLE
        /demo.Stats/Calls        request: a method path; answers how often it was called
      Prints "listening" once it accepts calls.

  grpc_demo.py call TARGET KIND METHOD [--timeout S] [--payload P ...] [--metadata K=V ...]
      One call (KIND: unary, server_stream, bidi); prints one JSON line:
      {"code", "details", "responses", "initial", "trailing", "seconds"}.
      Bidirectional calls send one message, wait for its answer, then send the next:
      a proxy that buffered either direction would hang the call.
"""

import argparse
import json
import queue
import sys
import threading
import time
from concurrent import futures

import grpc

_calls = {}
_lock = threading.Lock()


def _count(method):
    with _lock:
        _calls[method] = _calls.get(method, 0) + 1
        return _calls[method]


def _unary(request, context):
    _count("/demo.Echo/Unary")
    context.set_trailing_metadata((("x-demo-trailer", "unary"),))
    return request


def _server_stream(request, context):
    _count("/demo.Echo/ServerStream")
    for i in range(int(request)):
        yield b"msg-%d" % i
    context.set_trailing_metadata((("x-demo-trailer", "server-stream"),))


def _bidi(requests, context):
    _count("/demo.Echo/Bidi")
    for message in requests:
        yield b"echo:" + message
    context.set_trailing_metadata((("x-demo-trailer", "bidi"),))


def _slow(request, context):
    _count("/demo.Echo/Slow")
    remaining = context.time_remaining()
    time.sleep(int(request) / 1000.0)
    return json.dumps({"time_remaining": remaining}).encode()


def _not_found(request, context):
    _count("/demo.Echo/NotFound")
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())


def _flaky(method):
    def handler(request, context):
        if _count(method) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "first call of %s fails" % method)
        return b"ok"

    return handler


def _down(method):
    def handler(request, context):
        _count(method)
        context.abort(grpc.StatusCode.UNAVAILABLE, "down for good")

    return handler


def _stats(request, context):
    with _lock:
        return str(_calls.get(request.decode(), 0)).encode()


def serve(addr):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    unary = grpc.unary_unary_rpc_method_handler
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "demo.Echo",
                {
                    "Unary": unary(_unary),
                    "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
                    "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
                    "Slow": unary(_slow),
                    "NotFound": unary(_not_found),
                },
            ),
            grpc.method_handlers_generic_handler(
                "demo.Flaky",
                {m: unary(_flaky("/demo.Flaky/" + m)) for m in ("Get", "Put", "List")},
            ),
            grpc.method_handlers_generic_handler(
                "demo.Down",
                {m: unary(_down("/demo.Down/" + m)) for m in ("Get", "Put")},
            ),
            grpc.method_handlers_generic_handler("demo.Stats", {"Calls": unary(_stats)}),
        )
    )
    if not server.add_insecure_port(addr):
        sys.exit("cannot listen on " + addr)
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


def _metadata(md):
    return {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in (md or ())}


def call(args):
    channel = grpc.insecure_channel(
        args.target,
        options=[
            # Only the sidecar may retry: a retry by the client would hide whether it did.
            ("grpc.enable_retries", 0),
            # CI machines may set http_proxy; loopback calls must not go through it.
            ("grpc.enable_http_proxy", 0),
        ],
    )
    payloads = [p.encode() for p in args.payload] or [b""]
    metadata = tuple(tuple(m.split("=", 1)) for m in args.metadata)
    out = {"responses": [], "initial": {}, "trailing": {}}
    started = time.monotonic()
    try:
        if args.kind == "unary":
            response, c = channel.unary_unary(args.method).with_call(
                payloads[0], timeout=args.timeout, metadata=metadata
            )
            out["responses"].append(response.decode())
        elif args.kind == "server_stream":
            c = channel.unary_stream(args.method)(
                payloads[0], timeout=args.timeout, metadata=metadata
            )
            for response in c:
                out["responses"].append(response.decode())
        elif args.kind == "bidi":
            outgoing = queue.Queue()

            def requests():
                while True:
                    message = outgoing.get()
                    if message is None:
                        return
                    yield message

            c = channel.stream_stream(args.method)(
                requests(), timeout=args.timeout, metadata=metadata
            )
            for p in payloads:
                outgoing.put(p)
                out["responses"].append(next(c).decode())
            outgoing.put(None)
            for response in c:
                out["responses"].append(response.decode())
        else:
            sys.exit("unknown kind " + args.kind)
        out["code"] = c.code().name
        out["details"] = c.details()
        out["initial"] = _metadata(c.initial_metadata())
        out["trailing"] = _metadata(c.trailing_metadata())
    except grpc.RpcError as e:
        out["code"] = e.code().name
        out["details"] = e.details()
        out["trailing"] = _metadata(e.trailing_metadata())
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out), flush=True)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("addr")
    c = sub.add_parser("call")
    c.add_argument("target")
    c.add_argument("kind")
    c.add_argument("method")
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--payload", action="append", default=[])
    c.add_argument("--metadata", action="append", default=[])
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.addr)
    else:
        call(args)


if __name__ == "__main__":
    main()
