"""Defaults of the options `lmeval run`, `infer` and `judge` share, in one place: the command
line shows them and `EvalOptions` falls back to them. Plain values, so `lmeval --help` imports
nothing heavy to show them."""

JUDGE_MODEL = "opencompass/CompassVerifier-32B"
JUDGE_TP = 2
# The judge server's --session-len unless --judge-server-args sets it: LMDeploy's evaluation
# guide starts CompassVerifier so; long predictions otherwise fail at the judge.
JUDGE_SESSION_LEN = 65536
REPLICAS = 1
HOST = "127.0.0.1"
WORK_DIR = "outputs"
READY_TIMEOUT = 1800.0  # seconds a model may take to load
GRACE = 10.0  # seconds a server gets after SIGTERM before it is killed
FORK_SERVER_ENV = "LMEVAL_FORK_SERVER"
STALL_TIMEOUT = 180.0  # seconds a server may look hung on end during a stage before it is restarted (watchdog)
RESTARTS = 1  # times each server lmeval started is restarted when it dies during a stage
# Keys of servers the user runs, read from the environment (out of `ps` and shell history).
API_KEY_ENV = "LMEVAL_API_KEY"
JUDGER_KEY_ENV = "LMEVAL_JUDGER_KEY"
LAUNCHER = "local"  # or "slurm"
