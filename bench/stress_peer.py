"""H2's attacker for bench/stress.sh: one process whose executable is
large, asking the node's Workload API for an X.509-SVID again and again.

bench/stress.py runs this under a copy of a Python interpreter padded to a
few hundred MB, as another user than the legitimate workload where it can.
Before each connection it touches its own executable: the new change time
makes it a file the node has not hashed yet, so every connection costs the
node a full hash (the node's digest cache is keyed by file identity, times
included). It speaks just enough HTTP/2 by hand (the standard library
only: the interpreter may not reach the project's .venv) to send
`FetchX509SVID` and see what comes back:
  refused  the stream ended with no message (trailers only, RST_STREAM or
           GOAWAY): what a process with no identity gets;
  svid     a message came (it has no identity: this would be a hole);
  closed   the node closed the connection without an answer;
  timeout  no answer within 20 s.

    stress_peer.py SOCKET EXE START_AT UNTIL   (epoch seconds; one JSON line out)
"""
import json
import os
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ANSWER_WAIT = 20.0


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK literal without indexing, new name, no Huffman coding."""
    out = b"\x00"
    for s in (name, value):
        b = s.encode()
        assert len(b) < 127
        out += bytes([len(b)]) + b
    return out


def request():
    block = (b"\x83\x86"  # :method POST, :scheme http (static table)
             + literal(":path", "/SpiffeWorkloadAPI/FetchX509SVID")
             + literal(":authority", "localhost")
             + literal("content-type", "application/grpc")
             + literal("te", "trailers")
             + literal("workload.spiffe.io", "true"))
    return (PREFACE + frame(SETTINGS, 0, 0)
            + frame(HEADERS, END_HEADERS, 1, block)
            + frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x00"))


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def ask(path, until):
    """One connection: what the node answered."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(max(0.2, min(ANSWER_WAIT, until - time.time())))
        conn.connect(path)
        conn.sendall(request())
        while True:
            head = read_exact(conn, 9)
            if head is None:
                return "closed"
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            payload = read_exact(conn, length) if length else b""
            if payload is None:
                return "closed"
            if kind == SETTINGS and not flags & ACK:
                conn.sendall(frame(SETTINGS, ACK, 0))
            elif stream == 1 and kind == DATA and length > 5:
                return "svid"
            elif stream == 1 and kind == HEADERS and flags & END_STREAM:
                return "refused"
            elif (stream == 1 and kind == RST_STREAM) or kind == GOAWAY:
                return "refused"
    except socket.timeout:
        return "timeout"
    except OSError:
        return "closed"
    finally:
        conn.close()


def main(path, exe, start_at, until):
    counts, waits = {}, []
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < until:
        try:
            os.utime(exe)
        except OSError:
            pass  # not its owner: the digest may then be known already
        t = time.time()
        outcome = ask(path, until)
        if outcome == "timeout" and time.time() >= until - 0.5:
            outcome = "unfinished at the end"
        else:
            waits.append(time.time() - t)
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome == "closed":
            time.sleep(0.05)
    print(json.dumps({"counts": counts, "waits": waits}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
