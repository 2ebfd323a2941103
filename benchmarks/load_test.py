"""The driver at scale: 1,000 connected workers reporting to one controller over zmq on loopback.

**Reports.** The real ``Controller`` (random search, journal on disk) serves on a ROUTER socket on
127.0.0.1 in this process. ``--procs`` client processes hold ``--workers`` DEALER sockets between
them, each a worker that registers, takes a trial, reports every ``1 / --rate`` seconds (every
report awaited: the round trip is what is measured), sends FINAL after ``--epochs`` reports and
takes the next trial. The load is offered open-loop (a worker sends its next report when it is due,
or as soon as the previous answer arrives if that is later). Measured over ``--seconds`` after every
worker holds a trial: reports answered per second, their round trip p50/p99, and trials finished
per second. Each client process drives its sockets from one epoll loop over their zmq FDs (no
asyncio), so the load generator costs little; still, it shares the machine's cores with the
server, so on a small machine the figure is a lower bound of what the server alone sustains. The
CPU time per message answered is printed for the server's serve thread, the server process (with
zmq's I/O thread) and the client processes.

**Memory and suggestion time as the study grows.** The same controller driven inline (no sockets)
through ``--grow`` trials of ``--epochs`` reports each, with random search and with ASHA: the
driver's memory per trial (traced Python allocations of the controller, its records and the
optimizer; the journal is on disk) and the time of one FINAL-and-next-trial (the suggestion and
its bookkeeping) in the first and the last thousand trials.

Goals (issue #10): at least 5,000 reports/s with p99 under 10 ms at 1,000 workers.

Run: ``python benchmarks/load_test.py [--workers 1000] [--procs 2] [--rate 5] [--seconds 15]
[--grow 10000] [--json out.json]``; about a minute.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc

import numpy as np


def _space():
    import lightning_maggy as lm

    return lm.Searchspace(lr=lm.Double(1e-4, 1e-1, log=True), units=lm.Integer(8, 256), act=lm.Categorical(["a", "b"]))


def _controller(optimizer, journal_path: str, epochs: int):
    from lightning_maggy.driver.controller import Controller
    from lightning_maggy.driver.journal import Journal

    return Controller(optimizer=optimizer, searchspace=_space(), direction="max", max_epochs=epochs,
                      num_trials=None, journal=Journal(journal_path), seed=0, heartbeat_timeout=600.0)


# -- the client processes ---------------------------------------------------------------------
class _Worker:
    """One simulated worker's state: its DEALER socket, its session and where it is in a trial."""

    __slots__ = ("wid", "sock", "session", "guard", "trial", "epoch", "due", "sent", "kind")

    def __init__(self, wid: int, sock, due: float) -> None:  # noqa: ANN001
        from lightning_maggy.transport.messages import ReplayGuard, Session

        self.wid, self.sock, self.due = wid, sock, due
        self.session, self.guard = Session(), ReplayGuard()
        self.trial: dict | None = None
        self.epoch = 0
        self.sent = 0.0
        self.kind = ""


def _clients(address: str, key: bytes, first_id: int, count: int, rate: float, epochs: int,
             start_at: float, seconds: float, out: str) -> None:
    """``count`` workers in one process: one DEALER socket each, one outstanding request each,
    open-loop, driven by one epoll loop over the sockets' FDs and a heap of due times (no asyncio,
    no ``zmq.Poller`` over every socket: the load generator should cost as little of the shared
    cores as it can)."""
    import heapq

    import zmq

    from lightning_maggy.transport.messages import decode, encode

    ctx = zmq.Context()
    period = 1.0 / rate
    lat: list[float] = []
    finals: list[float] = []
    late = 0
    end = start_at + seconds
    rng = np.random.default_rng(first_id)
    # zmq's FD per socket, edge-like, in one epoll: a poll costs the ready sockets, not all of them
    poller = select.epoll()
    by_fd: dict[int, _Worker] = {}
    ready: set[_Worker] = set()
    due: list[tuple[float, int, _Worker]] = []  # (due time, worker id, worker): reports to send

    def send(w: _Worker, message: dict) -> None:
        w.kind, w.sent = message["type"], time.time()
        w.sock.send_multipart(encode(message, key, w.session))
        ready.add(w)  # a send may consume the socket's edge on its FD: look at its events after

    def report(w: _Worker) -> None:
        trial = w.trial
        send(w, {"type": "report", "worker_id": w.wid, "trial_id": trial["trial_id"], "attempt": trial["attempt"],
                 "epoch": w.epoch, "value": float(w.epoch)})

    def final(w: _Worker) -> None:
        trial = w.trial
        send(w, {"type": "final", "worker_id": w.wid, "trial_id": trial["trial_id"], "attempt": trial["attempt"],
                 "status": "ok", "metric": 0.0, "error": None, "error_type": None, "fatal": False})

    def answered(w: _Worker, reply: dict, now: float) -> None:
        if w.kind == "register":
            return send(w, {"type": "get", "worker_id": w.wid})
        if w.kind == "report":
            if w.sent >= start_at:
                lat.append(now - w.sent)
            w.epoch += 1
            w.due += period
            if reply["decision"] == "continue" and w.epoch < epochs:
                return heapq.heappush(due, (w.due, w.wid, w))
            return final(w)
        if w.kind == "final" and start_at <= w.sent < end:
            finals.append(now - w.sent)
        if reply.get("type") != "trial":
            return None
        w.trial, w.epoch = reply["trial"], 0
        if w.kind == "get":
            w.due = now + float(rng.uniform(0, period))
        heapq.heappush(due, (w.due, w.wid, w))
        return None

    for k in range(count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IDENTITY, f"load-{first_id + k}".encode())
        sock.connect(address)
        w = by_fd[sock.get(zmq.FD)] = _Worker(first_id + k, sock, 0.0)
        poller.register(sock.get(zmq.FD), select.EPOLLIN)
        send(w, {"type": "register", "worker_id": w.wid, "pid": os.getpid(), "host": "load"})
    while True:
        now = time.time()
        if now >= end:
            break
        wait = min(due[0][0] - now, 0.1) if due else 0.1
        for fd, _ in poller.poll(max(0.0, wait)):
            ready.add(by_fd[fd])
        while ready:
            w = ready.pop()
            while w.sock.get(zmq.EVENTS) & zmq.POLLIN:
                body = decode(w.sock.recv_multipart(zmq.NOBLOCK), key)
                w.guard.check(body)
                answered(w, body, time.time())
        now = time.time()
        while due and due[0][0] <= now:
            _, _, w = heapq.heappop(due)
            if now - w.due > period:  # behind by more than a period: the load was not met
                late += 1
                w.due = now
            report(w)
    for w in by_fd.values():
        w.sock.close(0)
    poller.close()
    ctx.term()
    cpu = os.times()
    with open(out, "w") as fh:
        json.dump({"lat": lat, "finals": finals, "late": late, "cpu_s": cpu.user + cpu.system}, fh)


def load(workers: int, procs: int, rate: float, epochs: int, seconds: float, tmp: str) -> dict:
    import lightning_maggy as lm

    _CountingServer = _counting_server()
    key = os.urandom(32)
    ctl = _controller(lm.RandomSearch(seed=0), os.path.join(tmp, "load.jsonl"), epochs)
    server = _CountingServer(key)
    serve_cpu: list[float] = []

    def serve() -> None:  # the serve thread's own CPU time (Linux: its per-thread clock)
        clock = time.pthread_getcpuclockid(threading.get_ident())
        ctl.serve(server, tick_interval=0.25)
        serve_cpu.append(time.clock_gettime(clock))

    process_cpu = sum(os.times()[:2])
    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    start_at = time.time() + 3.0 + workers / 500  # every worker registered and holding a trial
    ctx = mp.get_context("spawn")
    per = [workers // procs + (1 if i < workers % procs else 0) for i in range(procs)]
    outs = [os.path.join(tmp, f"client-{i}.json") for i in range(procs)]
    clients = [ctx.Process(target=_clients, args=(server.address, key, 1 + sum(per[:i]), per[i], rate, epochs,
                                                  start_at, seconds, outs[i])) for i in range(procs)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    ctl.abort("load test over")
    serving.join(10)
    process_cpu = sum(os.times()[:2]) - process_cpu
    server.close()
    ctl.journal.close()
    data = [json.load(open(o)) for o in outs]
    lat = sorted(x for d in data for x in d["lat"])
    fin = sorted(x for d in data for x in d["finals"])
    return {
        "workers": workers, "procs": procs, "offered_reports_per_s": workers * rate, "seconds": seconds,
        "reports": len(lat), "reports_per_s": len(lat) / seconds,
        "report_p50_ms": 1000 * lat[len(lat) // 2], "report_p99_ms": 1000 * lat[int(len(lat) * 0.99)],
        "trials_per_s": len(fin) / seconds, "final_p50_ms": 1000 * fin[len(fin) // 2] if fin else None,
        "final_p99_ms": 1000 * fin[int(len(fin) * 0.99)] if fin else None,
        "late_sends": sum(d["late"] for d in data), "refused": ctl.refused,
        # CPU per message over the whole run (registration and the tail included)
        "messages": server.received, "serve_thread_cpu_us": 1e6 * serve_cpu[0] / server.received,
        "server_process_cpu_us": 1e6 * process_cpu / server.received,
        "client_cpu_us": 1e6 * sum(d["cpu_s"] for d in data) / server.received,
    }


def _counting_server():
    from lightning_maggy.transport.zmq_transport import ZmqServer

    class CountingServer(ZmqServer):
        received = 0

        def recv(self, timeout: float):  # noqa: ANN201
            item = super().recv(timeout)
            self.received += item is not None
            return item

    return CountingServer


# -- inline growth --------------------------------------------------------------------------------
def grow(name: str, trials: int, epochs: int, tmp: str) -> dict:
    import lightning_maggy as lm

    opt = lm.RandomSearch(seed=0) if name == "random" else lm.ASHA(reduction_factor=3)
    ctl = _controller(opt, os.path.join(tmp, f"grow-{name}.jsonl"), epochs)
    wid = 1
    ctl.handle(b"w", {"type": "register", "worker_id": wid, "pid": 1, "host": "h"})
    ((_, reply),) = ctl.handle(b"w", {"type": "get", "worker_id": wid})
    times: list[float] = []
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rng = np.random.default_rng(0)
    while len(times) < trials:
        trial = reply["trial"]
        decision = "continue"
        epoch = len(ctl.trials[trial["trial_id"]].history)
        while decision == "continue" and epoch < trial["budget"]:
            value = float(rng.random())
            ((_, rep),) = ctl.handle(b"w", {"type": "report", "worker_id": wid, "trial_id": trial["trial_id"],
                                           "attempt": trial["attempt"], "epoch": epoch, "value": value})
            decision = rep["decision"]
            epoch += 1
        status = {"continue": "ok", "stop": "stopped", "pause": "paused"}[decision]
        t0 = time.perf_counter()
        out = ctl.handle(b"w", {"type": "final", "worker_id": wid, "trial_id": trial["trial_id"],
                                "attempt": trial["attempt"], "status": status, "metric": value, "error": None,
                                "error_type": None, "fatal": False})
        times.append(time.perf_counter() - t0)
        replies = [r for _, r in out if r["type"] == "trial"]
        if not replies:
            break
        reply = replies[0]
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    ctl.journal.close()
    k = min(1000, len(times) // 2)
    return {"optimizer": name, "runs": len(times), "trials": len(ctl.trials),
            "bytes_per_trial": used / max(1, len(ctl.trials)),
            "first_ms": 1000 * statistics.median(times[:k]), "last_ms": 1000 * statistics.median(times[-k:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--procs", type=int, default=2, help="client processes holding the workers' sockets")
    parser.add_argument("--rate", type=float, default=5.0, help="reports per second per worker")
    parser.add_argument("--epochs", type=int, default=9, help="reports per trial")
    parser.add_argument("--seconds", type=float, default=15.0, help="the measured window")
    parser.add_argument("--grow", type=int, default=10000, help="trial runs of the inline growth test (0: skip)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = load(args.workers, args.procs, args.rate, args.epochs, args.seconds, tmp)
        growth = [grow(n, args.grow, args.epochs, tmp) for n in ("random", "asha")] if args.grow else []
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores shared by the server and {args.procs} client processes")
    print(f"{res['workers']} workers over {args.procs} processes, offered {res['offered_reports_per_s']:.0f} "
          f"reports/s ({args.rate:g} per worker), {args.epochs} reports per trial, {args.seconds:g} s measured:")
    print(f"  reports answered: {res['reports_per_s']:.0f}/s, round trip p50 {res['report_p50_ms']:.2f} ms, "
          f"p99 {res['report_p99_ms']:.2f} ms; trials finished {res['trials_per_s']:.0f}/s (FINAL to next "
          f"trial p50 {res['final_p50_ms'] or 0:.2f} ms, p99 {res['final_p99_ms'] or 0:.2f} ms); late sends "
          f"{res['late_sends']}")
    print(f"  CPU per message the server answered ({res['messages']} in all): serve thread "
          f"{res['serve_thread_cpu_us']:.0f} us, server process (with zmq's I/O thread) "
          f"{res['server_process_cpu_us']:.0f} us, client processes {res['client_cpu_us']:.0f} us")
    ok = res["reports_per_s"] >= 5000 and res["report_p99_ms"] < 10
    print(f"goal (>= 5,000 reports/s, p99 < 10 ms at 1,000 workers): {'yes' if ok else 'NO'}")
    for g in growth:
        print(f"  {g['optimizer']:>6}, {g['runs']} trial runs ({g['trials']} trials) inline: {g['bytes_per_trial'] / 1024:.1f} KiB "
              f"per trial; FINAL + next trial {g['first_ms']:.3f} ms (first 1,000) -> {g['last_ms']:.3f} ms (last 1,000)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"load": res, "growth": growth}, fh, indent=2)


if __name__ == "__main__":
    main()
