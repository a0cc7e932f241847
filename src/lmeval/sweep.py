"""Several models in one command (`lmeval run A B C`): each into a run of its own, with the judge
started once for all of them.

The models go one after the other on the GPUs given, or several at a time when --gpus holds
several groups of --tp × --replicas GPUs (with --tp given): model i on group i mod k. A group
is free for the next model as soon as the one before it is inferred, so one model's judging goes
on while the next one is inferred. When the judge has GPUs of its own, it loads during the first
model's inference and judges each model's datasets as they are inferred (lmeval.streaming);
when its GPUs are the models', every model is inferred first and the judge then judges them
all. Each run is a thread; those going at once judge on the one judge side by side.

A model whose run fails does not stop the others; the command ends with the scores of every
model side by side (lmeval.compare) and exits 1 if one failed, naming the `--reuse` that
resumes it. A Ctrl-C reaches one thread: the others raise it at their next check (app.cancel),
so every run stops its OpenCompass and servers as a single run does.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lmeval.app import Application
from lmeval.endpoint import Endpoint
from lmeval.exceptions import LmevalError, StageFailed, UsageError
from lmeval.forkserver import ForkServer
from lmeval.gpus import parse_gpu_list
from lmeval.launch import ServerGroup, check_model
from lmeval.options import EvalOptions
from lmeval.plan import EvalPlan, make_plan
from lmeval.stages import Evaluation, judge_endpoint, opencompass_forks, track

JOIN_SECONDS = 0.2


def check_models(options: list[EvalOptions]) -> None:
    """What only a sweep refuses, before any run folder is claimed."""
    first = options[0]
    for given, option in (("--name", first.name), ("--reuse", first.reuse), ("--api-server", first.api_server)):
        if option:
            raise UsageError(f"{given} goes with one model; evaluate the models one by one to use it")
    if first.step is not None:
        raise UsageError("--step goes with one model; a sweep reads each checkpoint's step from its folder's name")
    models = [option.model for option in options]
    twice = sorted({model for model in models if models.count(model) > 1})
    if twice:
        raise UsageError(f"model {', '.join(twice)} is given twice; name each model once")
    for option in options:
        check_model(option.model)


def gpu_groups(option: EvalOptions, models: int) -> list[str | None]:
    """The --gpus of each group of models going at once: --gpus split into groups of --tp ×
    --replicas when it holds several such groups and --tp is given (else one group: all of it,
    checked as for one model)."""
    if option.gpus is None or option.tp is None or option.launcher != "local":
        return [option.gpus]
    ids = parse_gpu_list(option.gpus, "--gpus")
    size = option.tp * option.replicas
    if len(ids) <= size or len(ids) % size:
        return [option.gpus]
    groups = [ids[start:start + size] for start in range(0, len(ids), size)][:models]
    if option.port is not None:
        raise UsageError(f"--port {option.port} would be the port of {len(groups)} models going at once; "
                         "leave --port out so each gets a free one")
    return [",".join(map(str, group)) for group in groups]


def phases(plans: list[EvalPlan], stages: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The stages each run goes through, in turn over all runs: judging waits until every
    model is inferred when the judge needs the models' GPUs."""
    if "infer" in stages and "eval" in stages and any(plan.judge_set and plan.gpus_overlap for plan in plans):
        return [("infer",), ("eval",)]
    return [stages]


def make_plans(app: Application, options: list[EvalOptions], stages: tuple[str, ...],
               groups: list[str | None]) -> list[EvalPlan]:
    """One plan a model, each on its group's GPUs, with ports of its own and the first one's judge."""
    plans: list[EvalPlan] = []
    for index, option in enumerate(options):
        taken = frozenset(port for plan in plans for server_set in (plan.target_set, plan.judge_set)
                          if server_set is not None for port in server_set.ports)
        plans.append(make_plan(option.model_copy(update={"gpus": groups[index % len(groups)]}), stages,
                               notify=app.warn, avoid_ports=taken))
    first = plans[0]
    for plan in plans[1:]:  # one judge for all: the first run's
        plan.judge, plan.judge_set = first.judge, first.judge_set
    app.info("runs: " + ", ".join(f"{plan.model_abbr} {plan.run_id}" for plan in plans))
    if len(groups) > 1:
        app.info(f"{len(groups)} models at a time, on GPUs " + "; ".join(map(str, groups)))
    return plans


@dataclass
class RunThread:
    """A run's thread and the sign that its model servers have left their GPUs."""

    thread: threading.Thread
    gpus_free: threading.Event


class Sweep:
    """The runs of one command, each a thread, and what they share: the judge, the GPU groups."""

    def __init__(self, app: Application, plans: list[EvalPlan], judge: Endpoint | None, groups: int,
                 forks: ForkServer | None = None) -> None:
        self.app = app
        self.plans = plans
        self.judge = judge
        self.groups = groups
        self.forks = forks
        self.failed: set[str] = set()  # run ids
        self.interrupts: list[KeyboardInterrupt] = []
        self.crashes: list[BaseException] = []

    def run_phase(self, phase: tuple[str, ...]) -> None:
        """PHASE of every run not failed yet; on each GPU group, in the order the models were
        given, each run starts once the one before it freed the GPUs. Returns when all ended;
        an interrupt of one stops all."""
        waiting = [[plan for index, plan in enumerate(self.plans) if index % self.groups == group
                    and plan.run_id not in self.failed] for group in range(self.groups)]
        started: list[RunThread | None] = [None] * self.groups
        threads: list[threading.Thread] = []
        try:
            while (any(waiting) and not self.stopping) or any(thread.is_alive() for thread in threads):
                for group, queue in enumerate(waiting):
                    last = started[group]
                    if queue and not self.stopping and (last is None or last.gpus_free.is_set()
                                                        or not last.thread.is_alive()):
                        started[group] = self.start(queue.pop(0), phase)
                        threads.append(started[group].thread)
                self.join(threads)
        except KeyboardInterrupt as interrupt:
            self.app.cancel.set(interrupt)
            while any(thread.is_alive() for thread in threads):  # later signals do not raise
                join_awhile(threads)
            raise
        if self.crashes:
            raise self.crashes[0]
        if self.interrupts:
            raise self.interrupts[0]

    @property
    def stopping(self) -> bool:
        return self.app.cancel.interrupt is not None

    def start(self, plan: EvalPlan, phase: tuple[str, ...]) -> RunThread:
        gpus_free = threading.Event()
        thread = threading.Thread(target=self.run_one, args=(plan, phase, gpus_free), name=plan.model_abbr,
                                  daemon=True)
        thread.start()
        return RunThread(thread, gpus_free)

    def join(self, threads: list[threading.Thread]) -> None:
        """Wait a moment for THREADS; after an interrupt or a crash in one, stop the others."""
        join_awhile(threads)
        if self.crashes:
            self.app.cancel.set(KeyboardInterrupt())  # the crash is raised once all stopped
        elif self.interrupts:
            raise self.interrupts[0]

    def run_one(self, plan: EvalPlan, phase: tuple[str, ...], gpus_free: threading.Event) -> None:
        app = self.app.for_run(plan.model_abbr)
        try:
            Evaluation(app, plan, self.judge, gpus_free, self.forks).execute(phase)
        except LmevalError as error:
            self.app.warn(f"{plan.model_abbr} (run {plan.run_id}) failed: {error.message}")
            if error.detail:
                self.app.err.print(error.detail, markup=False)
            self.failed.add(plan.run_id)
        except KeyboardInterrupt as interrupt:
            self.interrupts.append(interrupt)
        except BaseException as crash:  # noqa: BLE001 - a bug, raised by the main thread
            self.crashes.append(crash)


def join_awhile(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_SECONDS / len(threads))


def evaluate_models(app: Application, options: list[EvalOptions], stages: tuple[str, ...]) -> int:
    check_models(options)
    models = [option.model for option in options]
    groups = gpu_groups(options[0], len(options))
    plans = make_plans(app, options, stages, groups)
    first = plans[0]
    # The judge is started by the run that needs it first, and may be restarted by any: a thread
    # of the sweep's own forks it, so it is not sent SIGTERM when that run's thread ends. This
    # thread starts the one fork server of all runs' OpenCompass processes.
    with opencompass_forks(app, first) as forks, \
            ThreadPoolExecutor(1, thread_name_prefix="judge-starter") as starter, \
            ServerGroup(first.lmdeploy, first.run_dir / "servers", app, first.run_id, first.grace,
                        starter=lambda start: starter.submit(start).result()) as group:
        judge = judge_endpoint(first, group) if first.judge_set is not None and "eval" in stages else None
        sweep = Sweep(app, plans, judge, len(groups), forks)
        try:
            for phase in phases(plans, stages):
                sweep.run_phase(phase)
        except KeyboardInterrupt:
            app.info("runs that finished keep their scores; resume the others with "
                     "`lmeval run MODEL --reuse RUN` (runs: "
                     + ", ".join(f"{plan.model_abbr} {plan.run_id}" for plan in plans) + ")")
            raise
    failed = sweep.failed
    done = [plan for plan in plans if plan.run_id not in failed]
    if "eval" in stages and len(done) > 1:
        from lmeval.compare import compare, print_comparison

        print_comparison(app, compare(first.work_dir, [plan.run_id for plan in done]))
    track(app, done, name=f"sweep {first.run_id}")
    if failed:
        command = "run" if "infer" in stages and "eval" in stages else "infer"
        listing = "; ".join(f"{plan.model_abbr} (run {plan.run_id}): `lmeval {command} {model} ... --reuse {plan.run_id}`"
                            for model, plan in zip(models, plans) if plan.run_id in failed)
        raise StageFailed(f"{len(failed)} of {len(plans)} models failed, their errors are above; resume each alone "
                          f"with its other options as before: {listing}")
    return 0
