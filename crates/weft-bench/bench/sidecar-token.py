#!/usr/bin/env python3
"""What a sidecar's own token costs its start: the agent's one extra api call.

Starts a `weft server` (embedded store, durable writes) on a fresh data dir, creates Instances
on a node, and has an agent token mint one instance-bound proxy token per instance, one after
another on a keep-alive connection, as an agent does before each sidecar start. Then it deletes
the instances (each delete also deletes its token) and times those deletes against deletes of
instances that had no token. Prints the median and p99 of each.

    crates/weft-bench/bench/sidecar-token.py [WEFT_BIN] [COUNT]
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    weft = sys.argv[1] if len(sys.argv) > 1 else "target/release/weft"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    port = 18470
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [weft, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
             "--audit-log", "off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            run(data, port, count)
        finally:
            server.terminate()
            server.wait()


def run(data, port, count):
    token_file = os.path.join(data, "admin.token")
    deadline = time.time() + 20
    while not os.path.exists(token_file):
        if time.time() > deadline:
            sys.exit("the server did not start")
        time.sleep(0.05)
    admin = open(token_file).read().strip()
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def call(method, path, token, body=None):
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(body)
        start = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        took = time.perf_counter() - start
        if resp.status >= 300:
            sys.exit(f"{method} {path}: {resp.status} {text[:200]!r}")
        return took, text

    _, created = call("POST", "/api/v1/tokens", admin, {"role": "agent"})
    agent = json.loads(created)["token"]
    base = "/api/v1/namespaces/default/instances"
    for prefix in ("tok", "bare"):
        for i in range(count):
            inst = {"apiVersion": "weft/v1", "kind": "Instance",
                    "metadata": {"name": f"{prefix}-{i}"},
                    "spec": {"deployment": "web", "node": "n1",
                             "template": {"command": ["web"]}}}
            call("PUT", f"{base}/{prefix}-{i}", admin, inst)

    mints = []
    for i in range(count):
        took, _ = call("POST", "/api/v1/tokens", agent,
                       {"role": "proxy", "node": "n1", "instance": f"default/tok-{i}"})
        mints.append(took)
    deletes = {"with a token": [], "without": []}
    for i in range(count):
        # Interleaved, so that drift hits both.
        took, _ = call("DELETE", f"{base}/tok-{i}", admin)
        deletes["with a token"].append(took)
        took, _ = call("DELETE", f"{base}/bare-{i}", admin)
        deletes["without"].append(took)
    _, listed = call("GET", "/api/v1/tokens", admin)
    left = [t for t in json.loads(listed) if t.get("instance")]
    if left:
        sys.exit(f"{len(left)} instance tokens outlived their instances")

    def show(name, xs):
        xs = sorted(xs)
        p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
        print(f"{name:<32} median {statistics.median(xs) * 1e3:6.2f} ms   p99 {p99 * 1e3:6.2f} ms"
              f"   (n={len(xs)})")

    load = open("/proc/loadavg").read().split()[:3]
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, load {' '.join(load)}")
    show("mint an instance-bound token", mints)
    show("delete an instance with a token", deletes["with a token"])
    show("delete an instance without", deletes["without"])


if __name__ == "__main__":
    main()
