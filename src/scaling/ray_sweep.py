"""Runs a gptlab sweep's runs as Ray tasks: written beside the sweep and started by
`gptlab scaling sweep --executor ray`, which reads its output.

Each run is one task asking Ray for THREADS CPUs; the task runs `gptlab scaling run --dir RUN`
(the local executor's very command) on whichever worker Ray picks, so run folders and the
binary must be at the same paths on every node (a shared filesystem). Prints one JSON line per
finished run: {"run": DIR, "ok": bool, "last": the log's last line}.

    python ray_sweep.py SPEC.json
SPEC: {"exe", "runs": [DIR, ...], "threads", "problems", "address" (null: a local instance),
       "num_cpus" (local instance only)}
"""

import json
import subprocess
import sys

import ray


def main():
    spec = json.load(open(sys.argv[1]))
    if spec["address"]:
        ray.init(address=spec["address"], log_to_driver=False)
    else:
        ray.init(num_cpus=spec["num_cpus"], include_dashboard=False, log_to_driver=False,
                 object_store_memory=100 * 1024 * 1024)

    @ray.remote(num_cpus=spec["threads"])
    def train(run):
        cmd = [spec["exe"], "scaling", "run", "--dir", run, "--threads", str(spec["threads"]),
               "--capability-problems", str(spec["problems"])]
        with open(f"{run}/train.log", "w") as log:
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT).returncode
        lines = [l for l in open(f"{run}/train.log", errors="replace").read().splitlines() if l.strip()]
        return run, code == 0, lines[-1] if lines else ""

    pending = [train.remote(run) for run in spec["runs"]]
    while pending:
        done, pending = ray.wait(pending)
        for run, ok, last in ray.get(done):
            print(json.dumps({"run": run, "ok": ok, "last": last}), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
