#!/usr/bin/env python3
"""Writes desync.txt: the desync classifier's corpus, one case per line:

    CLASS<TAB>FLAGS<TAB>REQUEST

CLASS is what the request is (compliant, acceptable, ambiguous, severe), written here
by hand per family from RFC 9110/9112, ALB's documented classification reasons and
published smuggling research (CL.TE, TE.CL, TE.TE obfuscations, header-name
look-alikes, obs-fold, hop-by-hop abuse). FLAGS: `-`; `P` when Pingora's own
parser (or its proxy phase) refuses the request before any backend sees it
(400 in every mode); `E` when
Pingora percent-encodes the request target's control characters before anything else
sees it (the backend gets `/a%00b`, which no server reads two ways: forwarded in every
mode).
REQUEST uses \\r \\n \\t \\xNN escapes. Run: python3 make_desync_corpus.py > desync.txt
"""

cases = []


def add(cls, req, flags="-"):
    cases.append((cls, flags, req))


def esc(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\r":
            out.append("\\r")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or o == 0x7F or o > 0x7E:
            for b in ch.encode("utf-8") if o > 0xFF else bytes([o]):
                out.append("\\x%02x" % b)
        else:
            out.append(ch)
    return "".join(out)


H = "Host: app.test\r\n"
paths = ["/", "/a", "/api/v1/users?id=7", "/search?q=caf%C3%A9&page=2", "/x/y/z.json"]

# --- compliant -------------------------------------------------------------------
for m in ["GET", "HEAD", "DELETE", "OPTIONS"]:
    for p in paths:
        add("compliant", f"{m} {p} HTTP/1.1\r\n{H}Accept: */*\r\n\r\n")
for m in ["POST", "PUT", "PATCH"]:
    for body in ["hello", "{\"a\":1}", "x" * 100]:
        add("compliant", f"{m} /submit HTTP/1.1\r\n{H}Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}")
        add("compliant", f"{m} /submit HTTP/1.1\r\n{H}content-length: {len(body)}\r\n\r\n{body}")
    for te in ["chunked", "Chunked", "CHUNKED"]:
        add("compliant", f"{m} /chunks HTTP/1.1\r\n{H}Transfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
for m in ["GET", "HEAD"]:
    add("compliant", f"{m} / HTTP/1.1\r\n{H}Content-Length: 0\r\n\r\n")
for p in paths:
    add("compliant", f"GET {p} HTTP/1.0\r\n\r\n")
    add("compliant", f"GET {p} HTTP/1.1\r\nHOST: app.test\r\nUser-Agent: curl/8.0\r\nAccept-Encoding: gzip\r\n\r\n")
add("compliant", f"POST / HTTP/1.1\r\n{H}Content-Length: 005\r\n\r\nhello")
add("compliant", f"GET / HTTP/1.1\r\n{H}X-Empty:\r\n\r\n")
add("compliant", f"GET / HTTP/1.1\r\n{H}X-Tab:\tvalue\twith tabs\r\n\r\n")
add("compliant", f"GET / HTTP/1.1\r\n{H}Connection: keep-alive\r\n\r\n")
add("compliant", f"GET / HTTP/1.1\r\n{H}X_Custom_Header: underscores are valid token characters\r\n\r\n")
add("compliant", f"\r\nGET / HTTP/1.1\r\n{H}\r\n")

# --- acceptable ------------------------------------------------------------------
for m in ["GET", "HEAD"]:
    for body in ["a", "hello", "{\"q\":1}"]:
        add("acceptable", f"{m} /with-body HTTP/1.1\r\n{H}Content-Length: {len(body)}\r\n\r\n{body}")
for p in paths:
    add("acceptable", f"GET {p} HTTP/1.1\n{H}\r\n")
    add("acceptable", f"GET {p} HTTP/1.1\r\nHost: app.test\n\r\n")
    add("acceptable", f"GET {p} HTTP/1.1\nHost: app.test\n\n")
add("acceptable", f"POST / HTTP/1.1\nHost: app.test\nContent-Length: 5\n\nhello")
for v in ["Ren\u00e9e O'Connor", "\u00fcber", "\u65e5\u672c", "caf\u00e9 cr\u00e8me", "\u00ff"]:
    add("acceptable", f"GET / HTTP/1.1\r\n{H}X-Name: {v}\r\n\r\n")
    add("acceptable", f"GET / HTTP/1.1\r\n{H}Cookie: n={v}\r\n\r\n")
for c in ["\x01", "\x07", "\x1b", "\x7f"]:
    add("acceptable", f"GET / HTTP/1.1\r\n{H}X-Ctl: a{c}b\r\n\r\n", "P")
add("acceptable", f"GET / HTTP/1.1\r\n{H}   \r\n\r\n", "P")
for v in ["HTTP/1.2", "HTTP/1.9"]:
    add("acceptable", f"GET / {v}\r\n{H}\r\n", "P")

# --- ambiguous -------------------------------------------------------------------
for name in ["Content_Length", "content_length", "CONTENT_LENGTH", "Content.Length"]:
    for m in ["POST", "PUT"]:
        add("ambiguous", f"{m} / HTTP/1.1\r\n{H}{name}: 0\r\n\r\n")
for name in ["Transfer_Encoding", "transfer_encoding", "TRANSFER_ENCODING", "Transfer.Encoding"]:
    for m in ["POST", "PUT"]:
        add("ambiguous", f"{m} / HTTP/1.1\r\n{H}{name}: chunked\r\nContent-Length: 0\r\n\r\n")
for m in ["POST", "PUT", "PATCH"]:
    add("ambiguous", f"{m} / HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
    # Pingora refuses a Content-Length list when it proxies it.
    add("ambiguous", f"{m} / HTTP/1.1\r\n{H}Content-Length: 5, 5\r\n\r\nhello", "P")
    add("ambiguous", f"{m} / HTTP/1.1\r\n{H}Content-Length: 5,5\r\n\r\nhello", "P")
for m in ["GET", "HEAD"]:
    add("ambiguous", f"{m} / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    add("ambiguous", f"{m} / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
for conn in ["Content-Length", "close, Content-Length", "Transfer-Encoding", "keep-alive, transfer-encoding", "Host"]:
    for m in ["GET", "POST"]:
        body = "" if m == "GET" else "Content-Length: 0\r\n"
        # Pingora refuses to drop a Host the Connection header names.
        flags = "P" if conn == "Host" else "-"
        add("ambiguous", f"{m} / HTTP/1.1\r\n{H}{body}Connection: {conn}\r\n\r\n", flags)
for m in ["GET", "POST", "DELETE"]:
    for p in paths[:3]:
        body = "Content-Length: 0\r\n" if m == "POST" else ""
        add("ambiguous", f"{m} {p} HTTP/1.1\r\n{body}\r\n")
for c in ["\x01", "\x7f", "\t", "\x1f"]:
    add("ambiguous", f"GET /a{c}b HTTP/1.1\r\n{H}\r\n", "E")

# --- severe ----------------------------------------------------------------------
cl_te = [
    ("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "5c\r\n"),
    ("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "5c\r\n"),
    ("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    ("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nG"),
]
for m in ["POST", "PUT", "GET"]:
    for hdrs, body in cl_te:
        add("severe", f"{m} / HTTP/1.1\r\n{H}{hdrs}\r\n{body}")
te_obfuscations = [
    "chunked, chunked",
    "gzip, chunked",
    "deflate, chunked",
    "identity, chunked",
    "chunked, identity",
    "identity",
    "gzip",
    "xchunked",
    "chunked-false",
    "chunked;x=1",
    "\"chunked\"",
    "chunk",
    "x, chunked",
    "compress, chunked",
]
for te in te_obfuscations:
    for m in ["POST", "PUT"]:
        add("severe", f"{m} / HTTP/1.1\r\n{H}Transfer-Encoding: {te}\r\n\r\n0\r\n\r\n")
for m in ["POST", "PUT"]:
    add("severe", f"{m} / HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    add("severe", f"{m} / HTTP/1.1\r\n{H}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    add("severe", f"{m} / HTTP/1.1\r\n{H}Transfer-Encoding:\r\n\r\n")
    add("severe", f"{m} / HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
for v in ["+5", "-5", "0x5", "5 5", "5,6", "6, 5", "abc", "", " ", "5.0", "1e1", "99999999999999999999999", "５"]:
    for m in ["POST", "PUT"]:
        add("severe", f"{m} / HTTP/1.1\r\n{H}Content-Length: {v}\r\n\r\nhello")
for a, b in [(5, 6), (0, 5), (5, 50)]:
    for m in ["POST", "PUT", "GET"]:
        add("severe", f"{m} / HTTP/1.1\r\n{H}Content-Length: {a}\r\nContent-Length: {b}\r\n\r\nhello")
for name in ["Transfer-Encoding ", "Content-Length ", "Transfer-Encoding\t", "Host ", "X-Foo "]:
    add("severe", f"POST / HTTP/1.1\r\n{H}{name}: chunked\r\n\r\n0\r\n\r\n", "P")
for fold in ["Transfer-Encoding: gzip\r\n chunked", "X-Foo: bar\r\n Transfer-Encoding: chunked", "X-Foo: a\r\n\tb"]:
    add("severe", f"POST / HTTP/1.1\r\n{H}{fold}\r\nContent-Length: 0\r\n\r\n", "P")
for v in ["a\rb", "a\x00b", "chunked\r"]:
    add("severe", f"GET / HTTP/1.1\r\n{H}X-Bad: {v}\r\n\r\n", "P")
for t in ["/a\x00b", "/a\rb"]:
    add("severe", f"GET {t} HTTP/1.1\r\n{H}\r\n", "E")
for t in ["a/b", "x", "T /", "?q=1"]:
    add("severe", f"GET {t} HTTP/1.1\r\n{H}\r\n")
for m in ["G(T", "GET\x00", "@GET", "G\"T"]:
    add("severe", f"{m} / HTTP/1.1\r\n{H}\r\n", "P")
add("severe", f"GE T / HTTP/1.1\r\n{H}\r\n")
for hosts in ["Host: a.test\r\nHost: b.test\r\n", "Host: a.test\r\nhost: a.test\r\n"]:
    add("severe", f"GET / HTTP/1.1\r\n{hosts}\r\n", "P")
for line in ["NoColonHere", ": novalue", "Transfer-Encoding chunked"]:
    add("severe", f"GET / HTTP/1.1\r\n{H}{line}\r\n\r\n", "P")
add("severe", "GARBAGE\r\n\r\n", "P")
add("severe", "GET /\r\nHost: x\r\n\r\n", "P")

for cls, flags, req in cases:
    print(f"{cls}\t{flags}\t{esc(req)}")
