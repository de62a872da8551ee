"""Learning benchmarks of docs/bring-your-own-env.md (not timed tests; results go to docs/results.md).

    python bench/byoe.py memory [--lstm] [--steps N]   # impala local --env-spec ... --clients 0, the
                                                     # JavaScript client serving the one-step memory task
    python bench/byoe.py steer [--steps N]           # the docs' continuous Steer task, Python plain class

Each run starts ``impala local`` with a spec file and no Python env clients, runs the foreign client
for N env steps, then stops the stack and prints one JSON line: env steps, wall-clock seconds, and the
mean return of the last 100 episodes as counted by the system (the learner), read from metrics.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from impala.core.processes import stop_group  # noqa: E402

SPECS = {
    "memory": {"observation": {"shape": [1], "dtype": "float32"}, "action": {"type": "discrete", "n": 2}},
    "steer": {
        "observation": {"shape": [2], "dtype": "float32"},
        "action": {"type": "box", "shape": [1], "low": [-1.0], "high": [1.0]},
    },
}


def client_argv(task: str, endpoints: dict[str, object], steps: int, work: Path) -> tuple[list[str], Path]:
    if task == "memory":
        node = ROOT / "clients" / "node"
        argv = ["node", "memory_client.js", "--address", str(endpoints["ingress"][0])]  # type: ignore[index]
        token = Path(str(endpoints["ingress_token_file"])).read_text().strip()
        return [*argv, "--token", token, "--envs", "8", "--steps", str(steps)], node
    doc = (ROOT / "docs" / "bring-your-own-env.md").read_text()
    code = doc.split("<!-- example: steer.py", 1)[1].split("```python\n", 1)[1].split("\n```", 1)[0]
    script = work / "steer.py"
    script.write_text(code.replace("max_steps=20_000", f"max_steps={steps}"))
    return [sys.executable, str(script), str(work / "run" / "endpoints.json")], work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=sorted(SPECS))
    parser.add_argument("--lstm", action="store_true")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-byoe")
    args = parser.parse_args()
    work = args.work / f"{args.task}{'-lstm' if args.lstm else ''}-{args.seed}-{int(time.time())}"
    work.mkdir(parents=True)
    spec = work / "spec.json"
    spec.write_text(json.dumps(SPECS[args.task]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPALA_")}
    argv = [sys.executable, "-m", "impala", "local", "--env-spec", str(spec), "--clients", "0", "--no-live"]
    argv += ["--run-dir", str(work / "run"), "--seed", str(args.seed), *(["--use-lstm"] if args.lstm else [])]
    log = (work / "local.txt").open("wb")
    local = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        endpoints_path = work / "run" / "endpoints.json"
        while not endpoints_path.exists():
            if local.poll() is not None:
                raise SystemExit((work / "local.txt").read_text()[-2000:])
            time.sleep(0.2)
        endpoints = json.loads(endpoints_path.read_text())
        started = time.monotonic()
        client, cwd = client_argv(args.task, endpoints, args.steps, work)
        done = subprocess.run(client, cwd=cwd, env=env, capture_output=True, check=False)
        seconds = time.monotonic() - started
        time.sleep(3)  # the learner takes the last rollouts; metrics.csv gets its row
    finally:
        stop_group(local, 120)
        log.close()
    rows = list(csv.DictReader((work / "run" / "metrics.csv").open()))
    last = rows[-1] if rows else {}
    print(
        json.dumps(
            {
                "task": args.task,
                "lstm": args.lstm,
                "seed": args.seed,
                "client_exit": done.returncode,
                "client_report": done.stdout.decode().strip().splitlines()[-1:] if done.stdout else [],
                "env_steps": int(float(last.get("env_steps", 0))),
                "wall_clock_s": round(seconds, 1),
                "episodes": int(float(last.get("episodes", 0))),
                "episode_return_mean_100": float(last.get("episode_return_mean", "nan")),
                "run_dir": str(work / "run"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
