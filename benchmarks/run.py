"""Run every echo-server variant under the same loopback load and report ratios.

``python benchmarks/run.py [--quick]`` starts one server process per (variant, handler)
(:mod:`echo_server`, pinned to one CPU when possible) and one load-generator process
(:mod:`load`, pinned to another CPU), then measures, round after round, every workload on
every server in turn (interleaved: A B C ... A B C ..., the order rotated each round).
It prints one table per workload and handler with the medians over the rounds and their
ratios to ``pyasyncore-select`` (a) and to ``native-uvloop`` (f), writes
``benchmarks/results.json`` and, if matplotlib is importable, ``benchmarks/ratios.png``.
W1-W4 run on the echo servers (``--handlers``); W5 on a second server per variant, the
threaded HTTP server (handler ``wsgi``), in each of ``--w5-modes``.

A variant name may carry suffixes, to compare trees of ours in one run: ``@NAME`` runs it
on the package of another checkout (``--tree NAME=DIR``: DIR goes first on the server's
``PYTHONPATH``), ``+report`` with the handler report on (``ASYNCORE_ON_ASYNCIO_REPORT``
set to ``/dev/null``), e.g. ``--tree base=../baseline --variants
pyasyncore-select,ours-uvloop@base,ours-uvloop,ours-uvloop+report``.

Throughput is only meaningful while the load generator is not the bottleneck; its CPU
use is reported next to every number, and so is the server's CPU time per operation,
which stays comparable when throughput is not (a busy machine, a saturated client).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from echo_server import HANDLERS, THREADED, VARIANTS  # noqa: E402

BASE = "pyasyncore-select"
POLL = "pyasyncore-poll"
NATIVE = "native-uvloop"
TREES: dict[str, str] = {}
"""``--tree NAME=DIR``: the checkouts that ``VARIANT@NAME`` runs on."""


def _launch(variant: str) -> tuple[str, dict[str, str]]:
    """The echo_server variant behind a variant name with suffixes, and its environment."""
    env = {k: v for k, v in os.environ.items() if k != "ASYNCORE_ON_ASYNCIO_REPORT"}
    base, _, tree = variant.partition("@")
    if base.endswith("+report"):
        base = base.removesuffix("+report")
        env["ASYNCORE_ON_ASYNCIO_REPORT"] = os.devnull
    elif tree.endswith("+report"):
        tree = tree.removesuffix("+report")
        env["ASYNCORE_ON_ASYNCIO_REPORT"] = os.devnull
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([TREES[tree], *filter(None, [env.get("PYTHONPATH")])])
    return base, env


LABELS = {
    "w1": "W1 ping-pong (round trips/s)",
    "w2": "W2 bulk (MiB/s)",
    "w3": "W3 idle scaling (round trips/s of the active connections)",
    "w4": "W4 churn (connections/s)",
    "w5": "W5 threaded HTTP server (requests/s)",
}
W5_MODES = {"keepalive": "keep-alive", "close": "a connection per request"}


class Server:
    """One echo server process; restarted if it dies (a select() server does at fd 1024)."""

    def __init__(self, variant: str, handler: str, tmp: Path, cpu: int | None) -> None:
        self.variant, self.handler, self.tmp, self.cpu = variant, handler, tmp, cpu
        self.name = f"{variant}/{handler}"
        self.restarts = -1
        self.reports: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self) -> None:
        self.restarts += 1
        stem = self.tmp / f"{self.variant}-{self.handler}-{self.restarts}"
        portfile = Path(f"{stem}.port")
        self.stderr_path = Path(f"{stem}.err")
        variant, env = _launch(self.variant)
        cmd = [sys.executable, str(HERE / "echo_server.py"), variant, self.handler]
        cmd.append(str(portfile))
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        deadline = time.monotonic() + 20
        while not portfile.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server {self.name} did not start: {self.last_error()}")
            time.sleep(0.02)
        self.port = int(portfile.read_text())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_error(self) -> str:
        try:
            lines = self.stderr_path.read_text().strip().splitlines()
        except OSError:  # never started
            return ""
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        for line in out.splitlines():
            if line.startswith("{"):
                self.reports.append(json.loads(line))


class LoadWorker:
    """The load generator, a long-lived ``load.py --worker`` answering JSON requests."""

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, str(HERE / "load.py"), "--worker"]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def request(self, req: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            self.start()
            return {"error": f"load generator gave no answer within {timeout:.0f} s"}
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _cpus() -> tuple[int | None, int | None]:
    """CPUs for the servers and for the load generator (None: do not pin)."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def _plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    plan: list[dict[str, Any]] = []
    for w in args.workloads:
        if w == "w5":
            plan += [{"workload": "w5", "mode": m} for m in args.w5_modes]
        elif w != "w3":
            plan.append({"workload": w})
    if "w3" in args.workloads:
        plan += [{"workload": "w3", "idle": k} for k in args.idle]
    return plan


def _key(req: dict[str, Any]) -> str:
    if "idle" in req:
        return f"{req['workload']}-k{req['idle']}"
    if "mode" in req:
        return f"{req['workload']}-{req['mode']}"
    return str(req["workload"])


def _combos(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (variant, handler) servers: the echo servers W1-W4 need, and W5's.  W5 skips
    ``-coalesce`` variants: its channel has its own ``initiate_send()`` (a lock), and
    ``coalesce_pushes`` applies only to channels that keep 3.11's: it would run (d) again."""
    echo = [(v, h) for h in args.handlers for v in args.variants]
    threaded = [(v, THREADED) for v in args.variants if "-coalesce" not in v]
    return (
        echo if any(w != "w5" for w in args.workloads) else [],
        threaded if "w5" in args.workloads else [],
    )


def _targets(
    step: dict[str, Any], args: argparse.Namespace, echo: list[tuple[str, str]], threaded: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The servers one step of the plan measures."""
    if step["workload"] == "w5":
        return threaded
    if step["workload"] == "w3":
        return [c for c in echo if c[1] in args.w3_handlers]
    return echo


def measure(args: argparse.Namespace) -> dict[str, Any]:
    server_cpu, client_cpu = (None, None) if args.no_pin else _cpus()
    echo, threaded = _combos(args)
    combos = echo + threaded
    raw: list[dict[str, Any]] = []
    started = time.time()
    loadavg_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmpdir:
        servers = {c: Server(*c, Path(tmpdir), server_cpu) for c in combos}
        for s in servers.values():
            s.start()
        worker = LoadWorker(client_cpu)
        try:
            for rnd in range(args.rounds):
                for step in _plan(args):
                    targets = _targets(step, args, echo, threaded)
                    shift = rnd % max(1, len(targets))
                    for combo in targets[shift:] + targets[:shift]:
                        raw.append(_one(args, worker, servers[combo], step, rnd))
        finally:
            worker.stop()
            for s in servers.values():
                s.stop()
    return {
        "raw": raw,
        "servers": {
            s.name: {"restarts": s.restarts, "exit_reports": s.reports} for s in servers.values()
        },
        "environment": {
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "server_cpu": server_cpu,
            "client_cpu": client_cpu,
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "elapsed_s": time.time() - started,
        },
    }


def _one(
    args: argparse.Namespace, worker: LoadWorker, server: Server, step: dict[str, Any], rnd: int
) -> dict[str, Any]:
    if not server.alive():
        server.start()
    assert server.proc is not None
    req = dict(step, port=server.port, server_pid=server.proc.pid)
    req.update(duration=args.duration, warmup=args.warmup)
    t0 = time.monotonic()
    result = worker.request(req, timeout=args.duration + args.warmup + 150)
    took = time.monotonic() - t0
    if not server.alive():
        died = f"server died: {server.last_error()}"
        result["error"] = f"{result['error']}; {died}" if "error" in result else died
    result.update(key=_key(step), variant=server.variant, handler=server.handler, round=rnd)
    label = result.get("error") or f"{result['rate']:.0f}/s"
    print(
        f"  round {rnd} {result['key']:9} {server.name:24} {took:5.1f} s  {label}",
        file=sys.stderr,
    )
    return result


def _median(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Medians per (workload, handler, variant) and ratios to (a) and (f)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in data["raw"]:
        groups.setdefault((r["key"], r["handler"], r["variant"]), []).append(r)
    summary: dict[str, Any] = {}
    for (key, handler, variant), runs in groups.items():
        ok = [r for r in runs if "rate" in r and "error" not in r]
        row: dict[str, Any] = {
            "rounds_ok": len(ok),
            "errors": sorted({r["error"] for r in runs if "error" in r}),
        }
        fields = ("rate", "server_cpu_us_per_op", "client_util", "server_util")
        for field in (*fields, "server_cpu_idle", "client_busy"):
            row[field] = _median([r.get(field) for r in ok])
        summary.setdefault(key, {}).setdefault(handler, {})[variant] = row
    for handlers in summary.values():
        for rows in handlers.values():
            refs = (("a", rows.get(BASE)), ("b", rows.get(POLL)), ("f", rows.get(NATIVE)))
            for ref_name, ref in refs:
                for row in rows.values():
                    row[f"rate_vs_{ref_name}"] = _ratio(row["rate"], ref and ref["rate"])
                    # CPU per op the other way round, so that > 1 always means "better".
                    row[f"cpu_eff_vs_{ref_name}"] = _ratio(
                        ref and ref["server_cpu_us_per_op"], row["server_cpu_us_per_op"]
                    )
    return summary


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _bound(row: dict[str, Any]) -> str:
    """Which process set the pace: the one near a full CPU (the load generator also when it
    was running or waiting for a CPU 90 % of the time: starved on a shared CPU), if any;
    else ``shared`` when the server's CPU was never idle (other processes ran there: the
    server may have been starved rather than waiting), ``-`` when it idled (the server
    waited: not saturated)."""
    if max(row["client_util"] or 0, row.get("client_busy") or 0) >= 0.9:
        return "client"
    if (row["server_util"] or 0) >= 0.9:
        return "server"
    idle = row.get("server_cpu_idle")
    if idle is not None and idle < 0.05:
        return "shared"
    return "-"


def table(summary: dict[str, Any], variants: list[str]) -> str:
    out = []
    for key in sorted(summary, key=_workload_order):
        for handler, rows in sorted(summary[key].items()):
            wl, _, detail = key.partition("-")
            extra = f", K={detail[1:]} idle" if wl == "w3" else ""
            extra += f", {W5_MODES.get(detail, detail)}" if wl == "w5" else ""
            # W3: select() dies at fd 1024, so the idle-scaling targets are against (b).
            by_b = wl == "w3"
            out.append(f"\n{LABELS[wl]}{extra}, handler {handler}\n")
            out.append(
                "| variant | median | vs (a) | vs (f) | server µs/op | CPU eff. vs (a) | vs (f) "
                + ("| CPU eff. vs (b) " if by_b else "")
                + "| server CPU | client CPU | bound | ok/errors |"
            )
            out.append("|" + " --- |" * (12 if by_b else 11))
            for v in variants:
                r = rows.get(v)
                if r is None:
                    continue
                errors = f"{r['rounds_ok']}/{len(r['errors'])}"
                if r["errors"]:
                    errors += f" ({r['errors'][0][:60]})"
                out.append(
                    f"| {v} | {_fmt(r['rate'], ',.0f')} | {_fmt(r['rate_vs_a'], '.2f')} "
                    f"| {_fmt(r['rate_vs_f'], '.2f')} | {_fmt(r['server_cpu_us_per_op'], '.1f')} "
                    f"| {_fmt(r['cpu_eff_vs_a'], '.2f')} | {_fmt(r['cpu_eff_vs_f'], '.2f')} "
                    + (f"| {_fmt(r.get('cpu_eff_vs_b'), '.1f')} " if by_b else "")
                    + f"| {_fmt(r['server_util'], '.0%')} | {_fmt(r['client_util'], '.0%')} "
                    f"| {_bound(r)} | {errors} |"
                )
    return "\n".join(out)


def chart(summary: dict[str, Any], variants: list[str], path: Path) -> str:
    """Two panels of server CPU efficiency (log scale): against the frozen copy, and
    against native uvloop.  The frozen copy is (a), or (b) for W3, where (a) fails."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no chart drawn (pip install matplotlib)"
    groups = [(k, h) for k in sorted(summary, key=_workload_order) for h in sorted(summary[k])]
    shown = [v for v in variants if v not in (BASE, NATIVE)]
    fig, axes = plt.subplots(2, 1, figsize=(max(9, 1.1 * len(groups)), 8), sharex=True)
    width = 0.8 / len(shown)
    panels = (("frozen copy: (a), W3: (b)", None), ("native uvloop (f)", "f"))
    for ax, (title, ref) in zip(axes, panels):
        for i, v in enumerate(shown):
            ys = []
            for k, h in groups:
                row = summary[k][h].get(v) or {}
                name = ref or ("b" if k.startswith("w3") else "a")
                ys.append(row.get(f"cpu_eff_vs_{name}") or 0)
            ax.bar([g + i * width for g in range(len(groups))], ys, width, label=v)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"CPU efficiency vs {title}")
        ax.grid(axis="y", which="both", linewidth=0.3)
    axes[1].set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    axes[1].set_xticklabels([f"{k}\n{h}" for k, h in groups], fontsize="small")
    axes[0].legend(fontsize="small", ncol=3)
    axes[0].set_title("Server CPU time per operation, reference / variant (> 1: cheaper)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return f"chart written to {path}"


def _workload_order(key: str) -> tuple[str, int, str]:
    workload, _, detail = key.partition("-")
    if workload == "w3":
        return workload, int(detail[1:]), ""
    return workload, 0, detail


def report(paths: list[str], chart_path: Path) -> None:
    """Print the tables and draw the chart again from saved results (several runs merge)."""
    summary: dict[str, Any] = {}
    variants: list[str] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        for key, handlers in summarize(data).items():  # from the raw measurements
            summary.setdefault(key, {}).update(handlers)
        variants += [v for v in data["settings"]["variants"] if v not in variants]
    print(table(summary, variants))
    print(chart(summary, variants, chart_path))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about one minute: short windows")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds before each window (default 0.5)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--handlers", default=",".join(HANDLERS))
    parser.add_argument("--workloads", help="comma-separated, default w1,w2,w4,w5,w3 (quick: no w3)")
    parser.add_argument("--idle", default="1000", help="W3 idle counts, e.g. 1000,5000,10000")
    parser.add_argument("--w3-handlers", default="plain", help="handlers W3 runs on")
    parser.add_argument("--w5-modes", default="keepalive,close", help="W5: keepalive, close")
    parser.add_argument(
        "--tree", action="append", default=[], metavar="NAME=DIR", help="a checkout for VARIANT@NAME"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--output", default=str(HERE / "results.json"))
    parser.add_argument("--chart", default=str(HERE / "ratios.png"))
    parser.add_argument(
        "--report", nargs="+", metavar="JSON", help="measure nothing: print and chart saved results"
    )
    args = parser.parse_args(argv)
    if args.report:
        report(args.report, Path(args.chart))
        return

    args.duration = args.duration or (0.4 if args.quick else 2.0)
    args.warmup = args.warmup if args.warmup is not None else (0.15 if args.quick else 0.5)
    args.variants = args.variants.split(",")
    TREES.update(tree.split("=", 1) for tree in args.tree)
    args.handlers = args.handlers.split(",")
    args.w3_handlers = args.w3_handlers.split(",")
    args.w5_modes = args.w5_modes.split(",")
    if not set(args.w5_modes) <= set(W5_MODES):
        parser.error(f"--w5-modes: {', '.join(W5_MODES)}")
    default_workloads = "w1,w2,w4,w5" if args.quick else "w1,w2,w4,w5,w3"
    args.workloads = (args.workloads or default_workloads).split(",")
    args.idle = [int(k) for k in args.idle.split(",")]
    if args.rounds < 3:
        print("warning: fewer than 3 rounds; medians will be weak", file=sys.stderr)

    data = measure(args)
    load = data["environment"]["loadavg_before"]
    if load and load[0] > 0.5:
        data["environment"]["warning"] = (
            f"the machine was busy before the run (1-minute load average {load[0]:.1f}): "
            "throughput shows each process's share of a CPU more than its speed; "
            "trust server CPU time per op (CPU eff.) more"
        )
    data["settings"] = {k: v for k, v in vars(args).items() if k not in ("output", "chart")}
    data["summary"] = summarize(data)
    text = table(data["summary"], args.variants)
    print(text)
    print(
        "\n(a) = pyasyncore-select, (f) = native-uvloop; ratios > 1 are better than the "
        "reference.\nCPU eff. = reference's server CPU time per op / this one's. "
        "server/client CPU = share of one CPU used in the window.\n"
        "bound: which process used >= 90% of its CPU (client = the load generator set the\n"
        "pace, or was runnable 90% of the time on a shared CPU: compare CPU eff. instead);\n"
        "shared: neither, the server's CPU was never idle (other processes ran there);\n"
        "'-': neither, the server's CPU idled (the server was not saturated)."
    )
    if "warning" in data["environment"]:
        print(f"\nWARNING: {data['environment']['warning']}")
    Path(args.output).write_text(json.dumps(data, indent=1))
    print(f"\nresults written to {args.output}")
    print(chart(data["summary"], args.variants, Path(args.chart)))


if __name__ == "__main__":
    main()
