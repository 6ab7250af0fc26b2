"""A stand-in for Slurm's `sbatch` and `srun` on this machine, for running the cluster recipes in tests.

`install(directory)` writes both programs into ``directory`` (put it first on PATH). `sbatch` reads the
script's ``#SBATCH`` lines and its own options (these win), runs the job at once instead of queueing it
and returns the job id as Slurm does: with ``--array=A-B`` every task runs in parallel with
SLURM_ARRAY_JOB_ID / SLURM_ARRAY_TASK_ID / _COUNT / _MIN / _MAX set; ``--output`` (``%A``, ``%a``, ``%j``,
``%x``) is opened before the job starts, so a missing directory fails the job as on a cluster; a job whose
``--dependency=afterok:ID`` did not succeed never runs (Slurm's DependencyNeverSatisfied). `srun` inside a
job starts SLURM_NTASKS copies of its command with SLURM_PROCID / SLURM_NODEID / SLURM_LOCALID set, every
"node" being this machine. Job states are kept in $FAKE_SLURM_STATE (one file per job: its exit status).
"""

from __future__ import annotations

import sys
from pathlib import Path

SBATCH = r'''
import os, shlex, socket, subprocess, sys
from pathlib import Path

VALUED = {"--array", "--output", "-o", "--error", "-e", "--dependency", "-d", "--nodes", "-N", "--job-name", "-J",
          "--ntasks-per-node", "--gres", "--time", "-t", "--cpus-per-task", "-c", "--export"}
state = Path(os.environ["FAKE_SLURM_STATE"])
state.mkdir(parents=True, exist_ok=True)


def parse(tokens, options):
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if "=" in token and token.startswith("--"):
            key, value = token.split("=", 1)
        elif token in VALUED:
            key, value = token, tokens[index + 1]
            index += 1
        else:
            key, value = token, True
        options[{"-o": "--output", "-e": "--error", "-d": "--dependency", "-N": "--nodes",
                 "-J": "--job-name"}.get(key, key)] = value
        index += 1
    return options


arguments = sys.argv[1:]
split = next(i for i, token in enumerate(arguments) if not token.startswith("-") and
             (i == 0 or not (arguments[i - 1] in VALUED)))
script, script_arguments = Path(arguments[split]), arguments[split + 1:]
directives = []
for line in script.read_text().splitlines()[1:]:
    if line.startswith("#SBATCH"):
        directives += shlex.split(line[len("#SBATCH"):])
    elif line.strip() and not line.startswith("#"):
        break
options = parse(arguments[:split], parse(directives, {}))
counter = state / "next-id"
job_id = int(counter.read_text()) if counter.exists() else 1000
counter.write_text(str(job_id + 1))
print(job_id, flush=True)


def finish(status):
    (state / f"{job_id}.status").write_text(str(status))
    sys.exit(0)


for dependency in str(options.get("--dependency", "")).split(","):
    if dependency:
        kind, *ids = dependency.split(":")
        assert kind == "afterok", dependency
        if any((state / f"{i}.status").read_text() != "0" for i in ids):
            finish("DependencyNeverSatisfied")

nodes = int(options.get("--nodes", 1))
per_node = int(options.get("--ntasks-per-node", 1))
name = options.get("--job-name", script.name)
base = {**os.environ, "SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id), "SLURM_JOB_NAME": name,
        "SLURM_SUBMIT_DIR": os.getcwd(), "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NTASKS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_JOB_NODELIST": socket.gethostname(), "SLURMD_NODENAME": socket.gethostname(),
        "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
if "--array" in options:
    first, last = map(int, str(options["--array"]).split("%")[0].split("-"))
    tasks = list(range(first, last + 1))
else:
    tasks = [None]
running = []
for task in tasks:
    environment = dict(base)
    if task is not None:
        environment.update(SLURM_ARRAY_JOB_ID=str(job_id), SLURM_ARRAY_TASK_ID=str(task),
                           SLURM_ARRAY_TASK_COUNT=str(len(tasks)), SLURM_ARRAY_TASK_MIN=str(first),
                           SLURM_ARRAY_TASK_MAX=str(last))
    pattern = str(options.get("--output", "slurm-%A_%a.out" if task is not None else "slurm-%j.out"))
    log_name = (pattern.replace("%A", str(job_id)).replace("%a", str(task)).replace("%j", str(job_id))
                .replace("%x", name))
    try:
        log = open(log_name, "w")
    except OSError:
        running.append(None)  # Slurm cannot open the log: the job fails before it starts
        continue
    running.append(subprocess.Popen([str(script), *script_arguments], env=environment, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
statuses = [1 if process is None else process.wait() for process in running]
finish(max(statuses))
'''

SRUN = r'''
import os, socket, subprocess, sys

arguments = sys.argv[1:]
while arguments and arguments[0].startswith("-"):
    arguments = arguments[1:]
tasks = int(os.environ["SLURM_NTASKS"])
per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", 1))
running = []
for rank in range(tasks):
    environment = {**os.environ, "SLURM_PROCID": str(rank), "SLURM_NODEID": str(rank // per_node),
                   "SLURM_LOCALID": str(rank % per_node), "SLURM_STEP_ID": "0",
                   "SLURMD_NODENAME": socket.gethostname()}
    running.append(subprocess.Popen(arguments, env=environment))
sys.exit(max(process.wait() for process in running))
'''


def install(directory: Path) -> Path:
    """Write `sbatch` and `srun` into ``directory`` (made executable); return ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in (("sbatch", SBATCH), ("srun", SRUN)):
        path = directory / name
        path.write_text(f"#!{sys.executable}\n{source.lstrip()}", encoding="utf-8")
        path.chmod(0o755)
    return directory
