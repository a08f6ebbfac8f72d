"""A real gRPC server and client (Debian's python3-grpcio) for the sidecar's and the
gateway's gRPC tests (one copy, used by both through `backends_demo::grpc`).

No generated stubs: methods are registered with generic handlers and carry raw bytes,
so no protoc is needed.

  grpc_demo.py serve ADDR [--id NAME] [--tls CERT KEY]
      Serves, on plain HTTP/2 (h2c) as every gRPC server does, or over TLS (h2):
        /demo.Echo/Unary         answers the request, with trailing metadata
        /demo.Echo/ServerStream  request "N": N messages "msg-0".."msg-N-1"
        /demo.Echo/Bidi          answers each message with "echo:" + message
        /demo.Echo/Slow          request "MS": sleeps MS ms; answers the deadline the
                                 server saw (seconds left when the call arrived)
        /demo.Echo/NotFound      fails with NOT_FOUND and a message
        /demo.Flaky/*            UNAVAILABLE on the first call of each method, OK after
        /demo.Down/*             always UNAVAILABLE
        /demo.Stats/Calls        request: a method path; answers how often it was called
        /demo.Echo/Whoami        answers the server's --id
        /grpc.health.v1.Health/Check   the standard health service (messages encoded
                                 by hand): SERVING for "" and "demo.Echo" until
        /demo.Control/SetHealth  request "NOT_SERVING" or "SERVING" says otherwise;
                                 another service name is NOT_FOUND
      Prints "listening" once it accepts calls.

  grpc_demo.py call TARGET KIND METHOD [--timeout S] [--payload P ...] [--metadata K=V ...]
                    [--root-cert PEM --authority NAME]
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
_server_id = ""
# grpc.health.v1.HealthCheckResponse.ServingStatus
_SERVING, _NOT_SERVING = 1, 2
_health = {"status": _SERVING}
_HEALTH_SERVICES = ("", "demo.Echo")


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


def _whoami(request, context):
    _count("/demo.Echo/Whoami")
    return _server_id.encode()


def _varint(b, i):
    v, shift = 0, 0
    while True:
        byte = b[i]
        i += 1
        v |= (byte & 0x7F) << shift
        if byte < 0x80:
            return v, i
        shift += 7


def _health_check(request, context):
    """HealthCheckRequest { string service = 1; } -> HealthCheckResponse { enum status = 1; }"""
    _count("/grpc.health.v1.Health/Check")
    service, i = "", 0
    while i < len(request):
        key, i = _varint(request, i)
        if key == 0x0A:
            n, i = _varint(request, i)
            service = request[i : i + n].decode()
            i += n
        else:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "unexpected field")
    if service not in _HEALTH_SERVICES:
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service " + service)
    return bytes([0x08, _health["status"]])


def _set_health(request, context):
    _health["status"] = _NOT_SERVING if request == b"NOT_SERVING" else _SERVING
    return b"ok"


def serve(addr, tls=None):
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
                    "Whoami": unary(_whoami),
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
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": unary(_health_check)}),
            grpc.method_handlers_generic_handler("demo.Control", {"SetHealth": unary(_set_health)}),
        )
    )
    if tls:
        with open(tls[0], "rb") as c, open(tls[1], "rb") as k:
            creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
        port = server.add_secure_port(addr, creds)
    else:
        port = server.add_insecure_port(addr)
    if not port:
        sys.exit("cannot listen on " + addr)
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


def _metadata(md):
    return {k: v if isinstance(v, str) else v.decode("latin-1") for k, v in (md or ())}


def call(args):
    options = [
        # Only the proxy may retry: a retry by the client would hide whether it did.
        ("grpc.enable_retries", 0),
        # CI machines may set http_proxy; loopback calls must not go through it.
        ("grpc.enable_http_proxy", 0),
    ]
    if args.root_cert:
        with open(args.root_cert, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        if args.authority:
            options.append(("grpc.ssl_target_name_override", args.authority))
            options.append(("grpc.default_authority", args.authority))
        channel = grpc.secure_channel(args.target, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)
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
    s.add_argument("--id", default="")
    s.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    c = sub.add_parser("call")
    c.add_argument("target")
    c.add_argument("kind")
    c.add_argument("method")
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--payload", action="append", default=[])
    c.add_argument("--metadata", action="append", default=[])
    c.add_argument("--root-cert")
    c.add_argument("--authority")
    args = parser.parse_args()
    if args.command == "serve":
        global _server_id
        _server_id = args.id
        serve(args.addr, args.tls)
    else:
        call(args)


if __name__ == "__main__":
    main()
