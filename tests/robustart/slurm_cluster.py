"""A throwaway one-node Slurm cluster on localhost, for the integration tests in tests/robustart/test_slurm.py.

:class:`LocalSlurm` writes a munge key and a ``slurm.conf`` into a folder of its own, starts ``munged``,
``slurmctld`` and ``slurmd`` from that folder (state, spool, pid and log files all inside it, ports picked
free), and stops them again. Nothing under ``/etc`` or ``/var`` is read or written: clients and daemons
find the configuration through ``SLURM_CONF`` (:attr:`LocalSlurm.env`), and the configuration names the
private munge socket.

There is no accounting database (no slurmdbd), so the real ``sacct`` answers "Slurm accounting storage
is disabled". submitit polls job states with ``sacct -o JobID,State,NodeList --parsable2 -j ID``; when
that fails it keeps waiting for the job's result file, and a job that dies without writing one (killed,
out of time, a failing ``setup`` line) hangs the sweep for ever. ``sacct --completion`` reads the
job-completion log (``jobcomp/filetxt``, which the cluster writes to ``log/jobcomp.txt``) but cannot
name array tasks (it reports ``2`` for what submitit registered as ``1_0``). So :attr:`LocalSlurm.env`
puts first on ``PATH`` a small ``sacct`` (:data:`SACCT_SHIM`) that answers that query from
``scontrol --oneliner show job``, which knows pending, running and (for ``MinJobAge`` seconds) finished
jobs, array tasks by their ``ARRAYID_TASKID``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "sacct", "scancel")
PARTITION = "debug"

# ``sacct -o FIELDS --parsable2 -j ID ...`` answered from slurmctld's memory (``scontrol show job``).
SACCT_SHIM = r'''"""sacct for a cluster without accounting: the live and recently finished jobs, from scontrol."""
import argparse
import subprocess
import sys


def task_ids(spec):
    ids = []
    for part in spec.split("%")[0].split(","):
        first, _, last = part.partition("-")
        ids.extend(range(int(first), int(last or first) + 1))
    return ids


parser = argparse.ArgumentParser()
parser.add_argument("-o", "--format", default="JobID,State")
parser.add_argument("-j", "--jobs", action="append", default=[])
parser.add_argument("-P", "--parsable2", action="store_true")
args, _ = parser.parse_known_args()
fields = args.format.split(",")
wanted = {j for jobs in args.jobs for j in jobs.split(",")}
out = subprocess.run(["scontrol", "--oneliner", "show", "job"], capture_output=True, text=True)
if out.returncode != 0:
    sys.exit(out.stderr or "scontrol failed")
rows = []
for line in out.stdout.splitlines():
    job = dict(token.partition("=")[::2] for token in line.split())
    if "JobId" not in job:
        continue
    array, task = job.get("ArrayJobId"), job.get("ArrayTaskId")
    if wanted and job["JobId"] not in wanted and array not in wanted:
        continue
    job["State"] = job.get("JobState", "")
    names = [f"{array}_{t}" for t in task_ids(task)] if array and task else [job["JobId"]]
    for name in names:
        rows.append([name if f == "JobID" else job.get(f, "") for f in fields])
print("|".join(fields))
for row in rows:
    print("|".join(row))
'''

# Unix sockets (munge's, slurmstepd's in the spool folder) must have paths shorter than 108 bytes.
_MAX_ROOT_LEN = 48


def missing_requirements() -> str | None:
    """Why a cluster cannot be started here, or None if it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "needs root (the test cluster runs munged, slurmctld and slurmd as root, SlurmUser=root)"
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return f"Slurm/munge programs not found: {', '.join(missing)} (Debian: apt-get install slurm-wlm munge)"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, int]:
    """CPUs, topology and memory (MB) of this machine, as ``slurmd -C`` reports them."""
    hw: dict[str, int] = {}
    try:
        out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
        for token in out.split():
            key, _, value = token.partition("=")
            if key in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"):
                hw[key] = int(value)
    except (OSError, ValueError, subprocess.SubprocessError):
        hw = {}
    if "CPUs" not in hw or "RealMemory" not in hw:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        hw = {"CPUs": os.cpu_count() or 1, "RealMemory": pages * page_size // 2**20}
    # slurmd drains a node that claims more memory than it finds; leave some slack
    hw["RealMemory"] = max(256, int(hw["RealMemory"] * 0.9))
    return hw


def node_name() -> str:
    """This machine's short host name if it resolves (jobs reach their first node by name), else localhost."""
    name = socket.gethostname().split(".")[0]
    try:
        socket.gethostbyname(name)
    except (OSError, UnicodeError):
        return "localhost"
    return name or "localhost"


class LocalSlurm:
    """munged + slurmctld + slurmd for one node (this machine), everything under ``root``."""

    def __init__(self, root: Path, cluster_name: str = "robustart-test"):
        root = Path(root)
        if len(str(root)) > _MAX_ROOT_LEN:  # keep the socket paths short
            root = Path(tempfile.mkdtemp(prefix="slurm-"))
            self._own_root = True
        else:
            self._own_root = False
        self.root = root
        self.cluster_name = cluster_name
        self.node = node_name()
        self.hardware = node_hardware()
        self.conf = root / "etc" / "slurm.conf"
        self.log_dir = root / "log"
        self.procs: dict[str, subprocess.Popen] = {}
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = free_port()

    # -- configuration --------------------------------------------------------------------------------

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """What a client (sbatch, submitit, ...) needs in its environment to talk to this cluster."""
        return {
            "SLURM_CONF": str(self.conf),
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _write_files(self) -> None:
        for sub in ("etc", "state", "spool", "log", "run", "munge", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o711)  # clients must reach the socket
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)

        hw = self.hardware
        node_spec = " ".join(f"{k}={v}" for k, v in hw.items())
        r = self.root
        self.conf.write_text(
            "\n".join(
                [
                    f"ClusterName={self.cluster_name}",
                    "SlurmctldHost=localhost(127.0.0.1)",
                    f"SlurmctldPort={self.ctld_port}",
                    f"SlurmdPort={self.slurmd_port}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"StateSaveLocation={r / 'state'}",
                    f"SlurmdSpoolDir={r / 'spool'}",
                    f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
                    f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    # no cgroups: processes are tracked by their parents, tasks are not bound
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/backfill",
                    "MpiDefault=none",
                    "SwitchType=switch/none",
                    # no accounting database; finished jobs go to a text log (see the module's docstring)
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/filetxt",
                    f"JobCompLoc={self.log_dir / 'jobcomp.txt'}",
                    "ReturnToService=2",
                    "MailProg=/bin/true",
                    "MinJobAge=3600",
                    "SchedulerParameters=sched_interval=2",
                    "SlurmctldTimeout=30",
                    "SlurmdTimeout=60",
                    "InactiveLimit=0",
                    "KillWait=5",
                    "Waittime=0",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} {node_spec} State=UNKNOWN",
                    f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        shim = self.root / "bin" / "sacct"
        shim.write_text(f"#!{sys.executable}\n{SACCT_SHIM}")
        os.chmod(shim, 0o755)

    # -- daemons --------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        out = open(self.log_dir / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        env = {**os.environ, "SLURM_CONF": str(self.conf)}
        # a session of its own, so that stop() can signal the daemon and anything it forked
        self.procs[name] = subprocess.Popen(
            [_which(name), *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        out.close()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}\n{self.logs()}")

    def start(self, timeout: float = 90) -> None:
        """Start the daemons and wait until the node is idle; stops whatever started on failure."""
        self._write_files()
        try:
            m = self.root / "munge"
            self._spawn(
                "munged",
                [
                    "--foreground",
                    "--force",
                    f"--socket={self.munge_socket}",
                    f"--key-file={m / 'munge.key'}",
                    f"--pid-file={m / 'munged.pid'}",
                    f"--seed-file={m / 'munged.seed'}",
                    f"--log-file={self.log_dir / 'munged.log'}",
                ],
            )
            self._wait(lambda: self.munge_socket.exists(), timeout, "munged to open its socket")
            self._spawn("slurmctld", ["-D", "-c", "-i", "-f", str(self.conf)])
            self._wait(lambda: self._client("scontrol", "ping").returncode == 0, timeout, "slurmctld to answer")
            self._spawn("slurmd", ["-D", "-N", self.node, "-f", str(self.conf)])
            self._wait(lambda: self.node_state() == "idle", timeout, f"node {self.node} to be idle")
        except BaseException:
            self.stop()
            raise

    def _client(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [_which(args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **self.env},
        )

    def node_state(self) -> str:
        proc = self._client("sinfo", "--noheader", "--Node", "--format=%T", f"--nodes={self.node}")
        return proc.stdout.strip().rstrip("*~#$@+").lower() if proc.returncode == 0 else ""

    def wait_for_jobs(self, timeout: float = 60) -> None:
        """Wait until Slurm has no job left (a job's result file lands before Slurm calls it complete)."""
        self._wait(
            lambda: self._client("squeue", "--noheader", "--format=%i").stdout.strip() == "",
            timeout,
            "the queue to empty",
        )

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel the jobs left, stop the daemons (slurmd first, munged last) and reap them."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(OSError, subprocess.SubprocessError, RuntimeError, TimeoutError):
                self._client("scancel", "--full", f"--partition={PARTITION}", timeout=10)
                self.wait_for_jobs(timeout=30)  # slurmstepd kills the job's processes
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=15)
            # slurmstepd and job processes run in sessions of their own; whatever is left of this
            # session (a forked helper) goes too
            _signal_group(proc, signal.SIGKILL)
        self.procs.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- diagnostics ----------------------------------------------------------------------------------

    def logs(self, tail: int = 60) -> str:
        """The last lines of every daemon log, for assertion messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*")):
            if path.suffix == ".out" and path.with_suffix(".log").is_file():
                continue  # slurmctld -D and slurmd -D copy their log file to stdout
            lines = path.read_text(errors="replace").splitlines()
            parts.append(f"==> {path.name} (last {min(tail, len(lines))} of {len(lines)} lines) <==")
            parts.extend(lines[-tail:])
        return "\n".join(parts)

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
