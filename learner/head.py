"""`python -m learner.head start|env|status|stop` — a Ray head for `ray job submit`, with token auth set up.

Ray 2.60 turns token authentication on for `ray start`, so a head and every client that talks to it (the job
CLI, `ray status`, more nodes) must share `RAY_AUTH_MODE=token` and one token. `start` starts a head on this
machine (loopback by default), waits until it accepts jobs, and writes the exports the job CLI needs to an env
file (mode 0600: it holds the token); `source` that file, then `ray job submit` works as documented:

    .venv/bin/python -m learner.head start
    source ~/.crucible/ray-head/env.sh
    ray job submit --working-dir . -- python -m learner --config configs/rlvr/tiny-cpu.yaml run.out_dir=$PWD/runs/x
    .venv/bin/python -m learner.head stop

State lives in `$CRUCIBLE_HEAD_DIR` (default `~/.crucible/ray-head`). `stop` kills only this head's processes,
never `ray stop` (which kills every Ray on the machine). Every command ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from configs.loader import cli_error, run_cli


def head_dir() -> Path:
    return Path(os.environ.get("CRUCIBLE_HEAD_DIR") or Path.home() / ".crucible" / "ray-head")


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only (it holds the cluster's token), atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def env_lines(state: dict, venv_bin: str) -> str:
    """The exports for the job CLI. RAY_ADDRESS is the dashboard's job API (for `ray job submit/logs/stop`);
    inside a job Ray sets its own RAY_ADDRESS for the driver."""
    exports = {"RAY_ADDRESS": state["dashboard"], "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": state["token"],
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines.append(f"export PATH={shlex.quote(venv_bin)}:\"$PATH\"")  # this venv's `ray` and `python`
    return "# written by `python -m learner.head start`; source it, then `ray job submit ...`\n" + "\n".join(lines) + "\n"


def load_state(d: Path) -> dict | None:
    try:
        return json.loads((d / "state.json").read_text())
    except FileNotFoundError:
        return None


def running(state: dict | None):
    """The head named by `state` if any of its processes is alive, else None."""
    from learner.local_head import LocalRayHead

    if state is None:
        return None
    head = LocalRayHead.attach(state)
    return head if head.processes() else None


def start(args: argparse.Namespace, d: Path) -> dict:
    from learner.local_head import VENV_BIN, LocalRayHead

    if (head := running(load_state(d))) is not None:
        return {"status": "already running", **public(head.state()), "env_file": str(d / "env.sh")}
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    head = LocalRayHead(num_cpus=args.num_cpus, port=args.port, dashboard_port=args.dashboard_port,
                        metrics_port=args.metrics_port, node_ip=args.node_ip, resources=args.resources)
    try:
        head.wait_for_job_agent()
        write_private(d / "state.json", json.dumps(head.state(), indent=1))
        write_private(d / "env.sh", env_lines(head.state(), str(VENV_BIN)))
    except BaseException:
        head.stop()
        raise
    print(f"Ray head up: jobs at {head.dashboard}, nodes join at {head.address} (with the same RAY_AUTH_TOKEN), "
          f"metrics at {head.metrics_url}.\nNext: source {d / 'env.sh'}", file=sys.stderr)
    return {"status": "started", **public(head.state()), "env_file": str(d / "env.sh")}


def public(state: dict) -> dict:
    return {k: v for k, v in state.items() if k != "token"}


def stop(d: Path) -> dict:
    state = load_state(d)
    head = running(state)
    killed = 0
    if head is not None:
        killed = len(head.processes())
        head.stop()
    for name in ("state.json", "env.sh"):
        (d / name).unlink(missing_ok=True)
    return {"status": "stopped" if head else "not running", "processes_killed": killed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learner.head", description=__doc__.split("\n\n")[0].replace("\n", " "))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start a head (idempotent) and write the env file")
    p.add_argument("--node-ip", default="127.0.0.1",
                   help="address the head listens on; another machine's nodes need a routable one (default loopback)")
    p.add_argument("--port", type=int, default=6379, help="GCS port (nodes join at node-ip:port)")
    p.add_argument("--dashboard-port", type=int, default=8265, help="dashboard and job API port")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs (default: all cores)")
    p.add_argument("--resources", default=None, help='custom resources as JSON, e.g. \'{"sandbox": 8}\'')
    sub.add_parser("env", help="print the env file's path and exports")
    sub.add_parser("status", help="whether the head runs, and its addresses")
    sub.add_parser("stop", help="kill this head's processes (only them) and remove the env file")
    args = parser.parse_args(argv)
    d = head_dir()
    try:
        if args.command == "start":
            result = start(args, d)
        elif args.command == "stop":
            result = stop(d)
        else:
            state = load_state(d)
            alive = running(state) is not None
            if args.command == "env":
                if not alive:
                    return cli_error(f"no head is running (state in {d}); start one: python -m learner.head start", 1)
                print((d / "env.sh").read_text(), end="", file=sys.stderr)
            result = {"status": "running" if alive else "not running", **public(state or {}),
                      **({"env_file": str(d / "env.sh")} if alive else {})}
    except RuntimeError as exc:
        return cli_error(str(exc), 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
