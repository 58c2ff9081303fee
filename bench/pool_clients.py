"""Load driver of bench/pool-spread: N concurrent clients per app, each sending requests
back to back over fresh connections for a fixed time; prints queue-wait percentiles and how
requests spread over the app's processes. Queue wait = when the app started the request
(its x-started header) minus when the client sent it: nginx, core and queue time together."""
import socket, sys, threading, time
from collections import Counter


def request(port):
    sent = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in head[1:] if ":" in l)}
    return sent, status, headers


def clients(port, n, seconds, results):
    stop = time.time() + seconds

    def loop():
        while time.time() < stop:
            try:
                results.append(request(port))
            except OSError as e:
                results.append((time.time(), 0, {"error": str(e)}))

    threads = [threading.Thread(target=loop) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def pct(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p / 100))]


def main():
    ports = [int(p) for p in sys.argv[1].split(",")]
    n, warmup, seconds = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    # One continuous run (stopping the clients between a warm-up and the measurement would
    # empty the queues and let the pool rebalance); only requests sent after the warm-up count.
    results = {port: [] for port in ports}
    begin = time.time()
    threads = [t for port in ports for t in clients(port, n, warmup + seconds, results[port])]
    for t in threads:
        t.join()
    counted_from = begin + warmup
    for port in ports:
        results[port] = [r for r in results[port] if r[0] >= counted_from]
    print(f"| app | requests | req/s | errors | queue wait p50 / p90 / p99 / max ms | processes | requests per process | max/min |")
    print("|---|---|---|---|---|---|---|---|")
    for i, port in enumerate(ports):
        ok = [(sent, h) for sent, status, h in results[port] if status == 200 and "x-started" in h]
        errors = len(results[port]) - len(ok)
        waits = sorted(max(0.0, float(h["x-started"]) - sent) * 1000 for sent, h in ok)
        per_pid = Counter(h["x-pid"] for _, h in ok)
        counts = sorted(per_pid.values())
        w = " / ".join(f"{pct(waits, p):.0f}" for p in (50, 90, 99)) + f" / {waits[-1]:.0f}" if waits else "-"
        spread = f"{counts[-1] / counts[0]:.2f}" if counts else "-"
        print(f"| {'AB'[i]} | {len(ok)} | {len(ok) / seconds:.0f} | {errors} | {w} | {len(per_pid)} | {', '.join(map(str, counts))} | {spread} |")


main()
