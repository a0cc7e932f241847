"""From the user's options to an evaluation plan: every check that can fail runs here, before
any server starts loading."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import SecretStr

from lmeval import __version__, answers, configplan, datafiles, defaults, foreign, outputs, slurm, suites, tracking
from lmeval.datasets import UserDataset
from lmeval.exceptions import UsageError
from lmeval.fleet import ServerSet, plan_server_set
from lmeval.launch import REDACTED, check_model, parse_server_args, served_name, server_arg_value
from lmeval.manifest import MANIFEST_NAME, Manifest
from lmeval.options import EvalOptions
from lmeval.runs import claim_new_folder, prepare_work_dir, run_folder
from lmeval.slurm_server import SlurmPlacement, parse_slurm_args
from lmeval.steps import checkpoint_step
from lmeval.tools import LMDEPLOY, OPENCOMPASS, find_executable, installed_version


# ---------------------------------------------------------------- evaluation plans

EXTERNAL_IN_FLIGHT = 128  # requests kept in flight to a server lmeval did not start
UNUSED_KEY = SecretStr("unused-by-this-stage")
KEY_OPTIONS = {"--api-server": "--api-key", "--judger-server": "--judger-key"}  # the server's key option
KEY_ENV = {"--api-key": defaults.API_KEY_ENV, "--judger-key": defaults.JUDGER_KEY_ENV}


@dataclass
class EvalPlan:
    """Everything one `run`, `infer` or `judge` resolved before starting anything."""

    run_id: str
    run_dir: Path
    work_dir: Path
    manifest: Manifest
    opencompass: Path
    lmdeploy: Path | None
    datasets: tuple[suites.DatasetRef, ...]
    model_abbr: str
    generation: configplan.Generation
    target: configplan.ServedModel
    target_set: ServerSet | None  # None: a server the user runs, or none needed
    judge: configplan.ServedModel | None
    judge_set: ServerSet | None
    ready_timeout: float
    grace: float
    restarts: int  # per server lmeval started, when it dies (or stalls) during a stage
    stall_timeout: float  # seconds a server may look hung on end before it counts as dead (lmeval.watchdog)
    stream: bool  # judge each dataset once inferred, when the judge has GPUs of its own
    fork_server: bool  # OpenCompass's processes and tasks forked (lmeval.forkserver), not started anew
    dry_run: bool
    # Dataset files to copy into the run (source, copy), done under the run's lock.
    copies: tuple[tuple[Path, Path], ...] = ()
    # Set by `--reuse RUN --redo` when RUN was made with other settings: why its outputs are
    # moved aside before anything runs.
    redo_reason: str = ""
    # Set by `--reuse RUN --retry-truncated`: RUN's folder, whose answers that finished this run keeps.
    parent_dir: Path | None = None
    # The trackers the scores go to once judged, and which tracker run (lmeval.tracking).
    log_to: tuple[str, ...] = ()
    log_run_id: str | None = None
    log_group: str | None = None

    @property
    def abbrs(self) -> list[str]:
        return suites.dataset_abbrs(self.datasets)

    @property
    def gpus_overlap(self) -> bool:
        if self.target_set is None or self.judge_set is None:
            return False
        return bool(set(self.target_set.gpus) & set(self.judge_set.gpus))

    def config_plan(self, target: configplan.ServedModel, judge: configplan.ServedModel | None,
                    abbrs: list[str] | None = None) -> configplan.ConfigPlan:
        """The configs' plan; ABBRS: of those datasets only (a streamed evaluation's, or the
        datasets inferred when others failed)."""
        return configplan.ConfigPlan(datasets=self.datasets, model_abbr=self.model_abbr, target=target,
                                     generation=self.generation, judge=judge,
                                     only=None if abbrs is None else tuple(abbrs), forked_tasks=self.fork_server,
                                     answers_log=str(answers.log_path(self.run_dir)))

    def predictions_complete(self) -> bool:
        return not outputs.missing_predictions(self.run_dir, self.model_abbr, self.abbrs)


def in_flight(capacity: int) -> int:
    """Half again as many requests as the servers run at once: the few queued at the server fill
    a freed slot at once, where a fresh request needs a round trip and the client's CPU to arrive.
    (`bench/inference_bench.py --sections inflight`, 1024 prompts on 128 slots, 2 cores: 96.8%
    busy at exactly capacity, 97.7-98.2% from 1.12x to 2x.)"""
    return capacity + max(1, capacity // 2)


def served_model(server_set: ServerSet, tokenizer_path: str) -> configplan.ServedModel:
    """What OpenCompass talks to: the set's front (the proxy with replicas), kept full."""
    front = server_set.front
    return configplan.ServedModel(base_url=front.url, api_key=front.api_key,
                                  served_name=server_set.replicas[0].served_name,
                                  tokenizer_path=tokenizer_path, in_flight=in_flight(server_set.capacity()))


def external_server(url: str, key: SecretStr | None, option: str, tokenizer_path: str) -> configplan.ServedModel:
    """A server the user runs: check now that it answers and learn the model it serves."""
    import httpx

    from lmeval.readiness import http_client, served_models

    base = url.rstrip("/")
    base = base[:-3] if base.endswith("/v1") else base
    if not re.fullmatch(r"https?://[^/\s]+", base):
        raise UsageError(f"{option} {url!r} is not a server URL like http://HOST:PORT")
    secret = key.get_secret_value() if key else None
    try:
        with http_client() as client:
            models = served_models(client, base, secret)
    except httpx.HTTPStatusError as error:
        code = error.response.status_code
        key_option = KEY_OPTIONS[option]
        hint = (f"; give its key with {key_option} (or {key_option}-file, or the environment variable "
                f"{KEY_ENV[key_option]})" if code in (401, 403) else "")
        raise UsageError(f"{option} {base} answered /v1/models with HTTP {code}{hint}") from None
    except (httpx.HTTPError, ValueError, KeyError) as error:
        raise UsageError(f"cannot reach {option} {base} ({type(error).__name__}); check the URL and that it runs") from None
    if not models:
        raise UsageError(f"{option} {base} serves no model")
    return configplan.ServedModel(base_url=base, api_key=key or UNUSED_KEY, served_name=models[0],
                                  tokenizer_path=tokenizer_path, in_flight=EXTERNAL_IN_FLIGHT)


def fingerprint_inputs(model: str, model_abbr: str, datasets: tuple[suites.DatasetRef, ...],
                       generation: configplan.Generation, data: str | None = None) -> dict:
    """What the predictions depend on: the model, its name, each dataset (a file by its
    content), the generation settings and, read from a data folder, the suite's files there
    (DATA: their hash, lmeval.datadir). No secrets: it is stored in the manifest."""
    items = []
    for item in datasets:
        if isinstance(item, suites.SuiteDataset):
            items.append(["suite", item.name])
        else:
            items.append(["file", item.name, item.kind, hashlib.sha256(Path(item.path).read_bytes()).hexdigest()])
    # Settings left unset are left out: runs made before they existed keep their fingerprint.
    inputs = {"model": model, "abbr": model_abbr, "datasets": items, "generation": generation.model_dump(exclude_none=True)}
    return inputs | ({"data": data} if data else {})


def fingerprint_of(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def describe_change(old: dict, new: dict) -> str:
    """What differs between two fingerprint inputs, in words: `with temperature 0.6, not 0.1`."""
    if not old:
        return "with other settings"
    parts = []
    if old.get("model") != new["model"]:
        parts.append(f"with model {old.get('model')}, not {new['model']}")
    if old.get("abbr") != new["abbr"]:
        parts.append(f"under the name {old.get('abbr')}, not {new['abbr']}")
    old_sets, new_sets = old.get("datasets") or [], new["datasets"]
    if [item[1] for item in old_sets] != [item[1] for item in new_sets]:
        parts.append(f"for datasets {', '.join(item[1] for item in old_sets) or 'none'}, "
                     f"not {', '.join(item[1] for item in new_sets)}")
    else:
        changed = [new_item[1] for old_item, new_item in zip(old_sets, new_sets, strict=True)
                   if old_item != new_item]
        if changed:
            parts.append(f"from other contents of dataset {', '.join(changed)}")
    old_gen, new_gen = old.get("generation") or {}, new["generation"]
    settings = [f"{key.replace('_', '-')} {old_gen.get(key)}, not {new_gen.get(key)}"
                for key in sorted(set(old_gen) | set(new_gen)) if old_gen.get(key) != new_gen.get(key)]
    if settings:
        parts.append("with " + "; ".join(settings))
    if old.get("data") != new.get("data"):
        parts.append("on other data (another data folder, or other files in it)" if new.get("data")
                     else "from a data folder (--data-dir)")
    return "; ".join(parts) or "with other settings"


def _generation(options: EvalOptions) -> configplan.Generation:
    settings = ("temperature", "max_out_len", "max_seq_len", "top_p", "top_k", "repetition_penalty")
    overrides = {key: value for key in settings if (value := getattr(options, key)) is not None}
    if options.extra_body is not None:
        overrides["extra_body"] = _extra_body(options.extra_body, overrides)
    try:
        return configplan.Generation(**{**configplan.TARGET_GENERATION.model_dump(), **overrides})
    except ValueError as error:
        raise UsageError(f"bad generation setting: --{str(error.errors()[0]['loc'][0]).replace('_', '-')} "
                         f"{error.errors()[0]['msg']}") from None


def _extra_body(text: str, options: dict) -> dict:
    """--extra-body as the JSON object it must be, without a key an option of its own sets."""
    example = """like '{"chat_template_kwargs": {"enable_thinking": true}}'"""
    try:
        body = json.loads(text)
    except ValueError as error:
        raise UsageError(f"--extra-body is not JSON ({error}); give a JSON object, {example}") from None
    if not isinstance(body, dict):
        raise UsageError(f"--extra-body must be a JSON object, {example}; got a {type(body).__name__}")
    for key in ("top_p", "top_k", "repetition_penalty"):
        if key in body and key in options:
            raise UsageError(f"--extra-body sets {key} and so does --{key.replace('_', '-')}; give it once")
    return body


def _existing_run(work_dir: Path, run_id: str) -> tuple[Path, Manifest]:
    run_dir = run_folder(work_dir, run_id)
    return run_dir, Manifest.load(run_dir)


Datasets = tuple[suites.DatasetRef, ...]
Copies = tuple[tuple[Path, Path], ...]  # (dataset file, its copy in the run)


def _run_copies(datasets: Datasets, inputs_dir: Path) -> tuple[Datasets, Copies]:
    """The run keeps its own copy of each dataset file, so a later judge reads what was inferred.

    Returns the datasets pointing at those copies, and the copies still to make (made by the
    stage, under the run's lock; the plan writes nothing).
    """
    pointed, copies = [], []
    for item in datasets:
        if isinstance(item, suites.SuiteDataset):
            pointed.append(item)
            continue
        target = inputs_dir / f"{item.name}{Path(item.path).suffix}"
        if Path(item.path) != target:
            copies.append((Path(item.path), target))
        pointed.append(item.model_copy(update={"path": str(target)}))
    return tuple(pointed), tuple(copies)


def redact_argv(argv: list[str], secrets: list[str]) -> list[str]:
    """ARGV with every secret hidden, also inside `--api-key=K` forms."""
    hidden = [secret for secret in secrets if secret]
    redacted = []
    for arg in argv:
        for secret in hidden:
            arg = arg.replace(secret, REDACTED)
        redacted.append(arg)
    return redacted


@dataclass
class _Inputs:
    """What is evaluated: from the options (run, infer) or from the run's manifest (judge)."""

    model: str
    model_abbr: str
    datasets: Datasets
    generation: configplan.Generation
    data_dir: Path | None = None  # the data folder the suite is read from (lmeval data pull)
    data: str | None = None  # the hash of its files for these datasets


def make_plan(options: EvalOptions, stages: tuple[str, ...], notify=lambda text: None,
              avoid_ports: frozenset[int] = frozenset()) -> EvalPlan:
    """Check every option and input, then claim (or reopen) the run folder. Starts nothing.
    AVOID_PORTS: ports other runs of the command (a sweep's) have planned."""
    if options.restarts < 0:
        raise UsageError(f"--restarts must be 0 or more; got {options.restarts}")
    if options.stall_timeout <= 0:
        raise UsageError(f"--stall-timeout must be above 0 seconds; got {options.stall_timeout:g}")
    if options.log_to:
        tracking.check_trackers(options.log_to)
    opencompass = find_executable(OPENCOMPASS, options.opencompass)
    target_key, judge_key = options.target_key(), options.judge_key()
    placement, judge_placement = _placements(options)
    work_dir = prepare_work_dir(options.work_dir)
    judge_only = "infer" not in stages
    if options.redo and (judge_only or not options.reuse):
        raise UsageError("--redo goes with lmeval run/infer --reuse RUN: it redoes that run's inference")
    if judge_only:
        run_dir, manifest, inputs = _judged_run(options, work_dir, notify)
    else:
        inputs = _inputs_from_options(options)
    inputs = _read_from_data_folder(inputs, options, manifest if judge_only else None, notify)
    lmdeploy = None
    if judge_only:
        target_set = None
        target = _recorded_target(manifest, inputs)
    elif options.api_server:
        target_set = None
        target = external_server(options.api_server, target_key, "--api-server", inputs.model)
    else:
        lmdeploy = find_executable(LMDEPLOY, options.lmdeploy)
        target_set = _server_set("target", options, inputs.model, notify, gpus=options.gpus, tp=options.tp,
                                 replicas=options.replicas, port=options.port, server_args=options.server_args,
                                 placement=placement, avoid_ports=avoid_ports)
        target = served_model(target_set, inputs.model)
    judge = judge_set = None
    if "eval" in stages and suites.needs_judge(inputs.datasets):
        if options.judger_server:
            judge = external_server(options.judger_server, judge_key, "--judger-server",
                                    tokenizer_path=options.judge_model)
        else:
            lmdeploy = lmdeploy or find_executable(LMDEPLOY, options.lmdeploy)
            judge_set = _server_set(
                "judge", options, options.judge_model, notify, gpus=options.judge_gpus, tp=options.judge_tp,
                replicas=options.judge_replicas, port=options.judge_port,
                server_args=judge_server_args(options.judge_server_args),
                option_prefix="judge-", taken_gpus=frozenset(target_set.gpus) if target_set else frozenset(),
                avoid_ports=avoid_ports | (target_set.ports if target_set else frozenset()),
                placement=judge_placement)
            judge = served_model(judge_set, check_model(options.judge_model, "--judge-model"))

    # Names OpenCompass would mangle are refused now, not after the models loaded.
    configplan.check_plan(configplan.ConfigPlan(datasets=inputs.datasets, model_abbr=inputs.model_abbr,
                                                target=target, generation=inputs.generation, judge=judge))
    if "{{" in str(work_dir):
        raise UsageError(f"work dir {work_dir} contains '{{{{', which OpenCompass rewrites in its configs; "
                         "pick another -w")
    submitted = [server_set.placement for server_set in (target_set, judge_set)
                 if server_set is not None and server_set.placement is not None]
    if submitted and not options.dry_run:
        slurm.check_shared(work_dir, {placement.partition for placement in submitted})
    datasets, copies, redo_reason, parent_dir = inputs.datasets, (), "", None
    if options.retry_truncated and (judge_only or not options.reuse or options.redo):
        raise UsageError("--retry-truncated goes with lmeval run/infer --reuse RUN and a larger --max-out-len "
                         "(not with --redo): it makes a new run from RUN")
    if options.retry_truncated:
        parent_dir, old_limit = _truncated_parent(options, work_dir, inputs)
        datafiles.ensure_data(datasets, notify, options.dry_run)
        run_dir, manifest, datasets, copies = _new_run(options, work_dir, inputs)
        manifest.derived_from = {"run": parent_dir.name, "max_out_len": old_limit}
    elif options.reuse and not judge_only:
        run_dir, manifest, datasets, copies, redo_reason = _reopened_run(options, work_dir, inputs, notify)
    elif not judge_only:
        datafiles.ensure_data(datasets, notify, options.dry_run)  # before a run folder is claimed
        run_dir, manifest, datasets, copies = _new_run(options, work_dir, inputs)
    if options.reuse and not options.retry_truncated:
        datafiles.ensure_data(_needing_data(run_dir, inputs.model_abbr, datasets, stages), notify, options.dry_run)
    if options.step is not None or manifest.step is None:
        manifest.step = options.step if options.step is not None else checkpoint_step(inputs.model)
    given_keys = [key.get_secret_value() for key in (target_key, judge_key) if key]
    manifest.command = redact_argv(sys.argv, given_keys)
    manifest.versions = {"lmeval": __version__, "opencompass": installed_version(opencompass, "opencompass"),
                         "lmdeploy": installed_version(lmdeploy, "lmdeploy") if lmdeploy else "not used"}
    return EvalPlan(
        run_id=run_dir.name, run_dir=run_dir, work_dir=work_dir, manifest=manifest, opencompass=opencompass,
        lmdeploy=lmdeploy, datasets=datasets, model_abbr=inputs.model_abbr, generation=inputs.generation,
        target=target, target_set=target_set, judge=judge, judge_set=judge_set, ready_timeout=options.ready_timeout,
        grace=options.grace, restarts=options.restarts, stall_timeout=options.stall_timeout, stream=options.stream,
        fork_server=options.fork_server,
        dry_run=options.dry_run, copies=copies,
        redo_reason=redo_reason, parent_dir=parent_dir,
        log_to=options.log_to, log_run_id=options.log_run_id, log_group=options.log_group,
    )


def _needing_data(run_dir: Path, model: str, datasets: Datasets, stages: tuple[str, ...]) -> list:
    """The DATASETS the STAGES will read the data of: those with a dataset still to infer, or
    to score (OpenCompass skips the ones whose outputs it finds)."""
    lacking = []
    for item in datasets:
        names = suites.dataset_abbrs([item])
        if ("infer" in stages and outputs.missing_predictions(run_dir, model, names)) or \
                ("eval" in stages and any(outputs.result_error(run_dir, model, name) for name in names)):
            lacking.append(item)
    return lacking


def _inputs_from_options(options: EvalOptions) -> _Inputs:
    if not options.model:
        raise UsageError("give the MODEL to evaluate")
    model = check_model(options.model)
    return _Inputs(model=model, model_abbr=options.name or served_name(model),
                   datasets=suites.resolve_datasets(options.task, options.datasets, options.dataset_files),
                   generation=_generation(options))


def _judged_run(options: EvalOptions, work_dir: Path, notify) -> tuple[Path, Manifest, _Inputs]:
    """`lmeval judge --reuse RUN`: the run, and what it inferred, as its manifest recorded it
    (or, for a run lmeval did not make, as its OpenCompass config and predictions show)."""
    if not options.reuse:
        raise UsageError("lmeval judge needs --reuse RUN: the run whose predictions to judge")
    run_dir = run_folder(work_dir, options.reuse)
    manifest = Manifest.load(run_dir) if (run_dir / MANIFEST_NAME).exists() else _adopted(run_dir, notify)
    recorded = manifest.inputs
    inputs = _Inputs(
        model=recorded["model"], model_abbr=manifest.model_abbr,
        datasets=suites.resolve_datasets(recorded.get("task"), recorded.get("datasets"), recorded.get("files", [])),
        generation=configplan.Generation(**recorded["generation"]))
    abbrs = suites.dataset_abbrs(inputs.datasets)
    missing = outputs.missing_predictions(run_dir, inputs.model_abbr, abbrs)
    if len(missing) == len(abbrs):
        raise UsageError(f"run {options.reuse} has no predictions; run inference first "
                         f"(lmeval infer ... --reuse {options.reuse})")
    if missing:
        raise UsageError(f"run {options.reuse} lacks predictions for {', '.join(missing)}; "
                         f"finish inference with lmeval infer ... --reuse {options.reuse}")
    return run_dir, manifest, inputs


def _adopted(run_dir: Path, notify) -> Manifest:
    """A manifest for a run lmeval did not make, from what its folder shows (written by the
    stage, beside the outputs, which stay as they are)."""
    found = foreign.read_run(run_dir)
    datasets = suites.resolve_datasets(found.task, found.datasets, found.files)
    names = ", ".join(suites.dataset_abbrs(datasets))
    notify(f"run {run_dir.name} was not made by lmeval: judging model {found.model_abbr} on {names}, as "
           f"{found.config.relative_to(run_dir)} and predictions/ show them")
    inputs_now = fingerprint_inputs(found.model, found.model_abbr, datasets, found.generation)
    return Manifest(run_id=run_dir.name, model_abbr=found.model_abbr, fingerprint=fingerprint_of(inputs_now),
                    fingerprint_inputs=inputs_now,
                    inputs={"model": found.model, "task": found.task, "datasets": found.datasets, "files": found.files,
                            "name": found.model_abbr, "generation": found.generation.model_dump()})


def _recorded_target(manifest: Manifest, inputs: _Inputs) -> configplan.ServedModel:
    """The judge stage sends nothing to the target; the config still names the one that inferred."""
    recorded = manifest.servers.get("target")
    return configplan.ServedModel(
        base_url=recorded.url if recorded else "http://127.0.0.1:1", api_key=UNUSED_KEY,
        served_name=recorded.served_name if recorded else inputs.model_abbr, tokenizer_path=inputs.model,
        in_flight=1)


def judge_server_args(given: str) -> str:
    """The judge's LMDeploy flags: GIVEN, with `--session-len 65536` unless they set it (long
    predictions fail at a judge with LMDeploy's default), and prefix caching on: every judge
    prompt of a dataset starts with the same long instructions (LMDeploy has it off by default
    and no flag to turn it off, so neither has lmeval)."""
    args = with_default(given, "--session-len", str(defaults.JUDGE_SESSION_LEN), "--judge-server-args")
    if "--enable-prefix-caching" in parse_server_args(args, "--judge-server-args"):
        return args
    return f"--enable-prefix-caching {args}"


def with_default(server_args: str, flag: str, value: str, option: str) -> str:
    """SERVER_ARGS with `FLAG VALUE` added unless they set FLAG themselves."""
    if server_arg_value(parse_server_args(server_args, option), flag) is not None:
        return server_args
    return f"{flag} {value} {server_args}".strip()


def _placements(options: EvalOptions) -> tuple[SlurmPlacement | None, SlurmPlacement | None]:
    """Where the target's and the judge's servers run: here (None), or as Slurm jobs."""
    if options.launcher == "local":
        given = [name for name, value in (("--partition", options.partition),
                                          ("--judge-partition", options.judge_partition),
                                          ("--slurm-args", options.slurm_args)) if value]
        if given:
            raise UsageError(f"{' and '.join(given)} {'goes' if len(given) == 1 else 'go'} with --launcher slurm")
        return None, None
    extra = parse_slurm_args(options.slurm_args)
    return (SlurmPlacement(options.partition, extra),
            SlurmPlacement(options.judge_partition or options.partition, extra))


def _server_set(role: str, options: EvalOptions, model: str, notify, **settings) -> ServerSet:
    server_set, warning = plan_server_set(role, model=model, host=options.host, **settings)
    if warning:
        notify(warning)
    return server_set


def _reopened_run(options: EvalOptions, work_dir: Path, inputs: _Inputs,
                  notify) -> tuple[Path, Manifest, Datasets, Copies, str]:
    """`run/infer --reuse RUN`: the run resumed, or with `--redo` its outputs of other settings
    set to be moved aside (the last item says why; empty when resumed)."""
    run_dir, manifest = _existing_run(work_dir, options.reuse)
    # Compared on the files as given now (the run's own copies hold what was inferred).
    inputs_now = fingerprint_inputs(inputs.model, inputs.model_abbr, inputs.datasets, inputs.generation, inputs.data)
    wanted = fingerprint_of(inputs_now)
    redo_reason = ""
    if manifest.fingerprint and manifest.fingerprint != wanted:
        change = describe_change(manifest.fingerprint_inputs, inputs_now)
        if not options.redo:
            raise UsageError(
                f"run {options.reuse} was inferred {change}; its predictions would be mixed with new ones: "
                f"start a new run, or add --redo to move its outputs aside into {options.reuse}/stale-<time>/ "
                "and infer again")
        redo_reason = f"inferred {change}"
        # In memory only: saved once the stage holds the lock and has moved the outputs.
        manifest.stale.append({"reason": redo_reason, "fingerprint": manifest.fingerprint,
                               "fingerprint_inputs": manifest.fingerprint_inputs,
                               "stages": {name: record.status for name, record in manifest.stages.items()},
                               "scores": manifest.scores})
        manifest.stages, manifest.scores = {}, []
    elif options.redo:
        notify(f"--redo: run {options.reuse} was made with these settings; nothing to redo, resuming it")
    datasets, copies = _run_copies(inputs.datasets, run_dir / "lmeval" / "inputs")
    if redo_reason or not manifest.fingerprint:
        manifest.fingerprint, manifest.fingerprint_inputs = wanted, inputs_now
        manifest.inputs = _recorded_inputs(options, inputs, datasets)
        manifest.model_abbr = inputs.model_abbr
    # Only copies missing from the run (or not the file the fingerprint names) are made, unless
    # the redo replaces them all.
    copies = copies if redo_reason else tuple((src, dst) for src, dst in copies if not _same_file(src, dst))
    return run_dir, manifest, datasets, copies, redo_reason


def _truncated_parent(options: EvalOptions, work_dir: Path, inputs: _Inputs) -> tuple[Path, int]:
    """`--reuse RUN --retry-truncated`: RUN, checked to differ from these settings in a larger
    --max-out-len only (else the answers it keeps would not be this run's), and its limit."""
    run_dir, manifest = _existing_run(work_dir, options.reuse)
    old = (manifest.fingerprint_inputs.get("generation") or {}).get("max_out_len")
    new = inputs.generation.max_out_len
    if old is None or new <= old:
        raise UsageError(f"--retry-truncated asks RUN's cut answers again with a larger --max-out-len: run "
                         f"{options.reuse} was inferred with {old}, give more than that (now {new})")
    same = replace(inputs, generation=inputs.generation.model_copy(update={"max_out_len": old}))
    if fingerprint_of(fingerprint_inputs(same.model, same.model_abbr, same.datasets, same.generation,
                                         same.data)) != manifest.fingerprint:
        change = describe_change(manifest.fingerprint_inputs, fingerprint_inputs(
            same.model, same.model_abbr, same.datasets, same.generation, same.data))
        raise UsageError(f"run {options.reuse} was inferred {change}; --retry-truncated keeps its answers, so "
                         "only --max-out-len may differ: give the options it was made with")
    return run_dir, old


def _same_file(source: Path, copy: Path) -> bool:
    """Whether COPY holds what SOURCE does (whose hash the run's fingerprint has: it matched)."""
    if not copy.is_file() or copy.stat().st_size != source.stat().st_size:
        return False
    return hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()


def _new_run(options: EvalOptions, work_dir: Path, inputs: _Inputs) -> tuple[Path, Manifest, Datasets, Copies]:
    """A fresh run folder, claimed now."""
    inputs_now = fingerprint_inputs(inputs.model, inputs.model_abbr, inputs.datasets, inputs.generation, inputs.data)
    run_id, run_dir = claim_new_folder(work_dir)
    datasets, copies = _run_copies(inputs.datasets, run_dir / "lmeval" / "inputs")
    manifest = Manifest(run_id=run_id, model_abbr=inputs.model_abbr)
    manifest.fingerprint, manifest.fingerprint_inputs = fingerprint_of(inputs_now), inputs_now
    manifest.inputs = _recorded_inputs(options, inputs, datasets)
    return run_dir, manifest, datasets, copies


def _recorded_inputs(options: EvalOptions, inputs: _Inputs, datasets) -> dict:
    """What `lmeval judge --reuse` reads back: the run's dataset copies, never the user's files."""
    return {
        "model": inputs.model, "task": options.task, "datasets": options.datasets,
        "files": [item.path for item in datasets if isinstance(item, UserDataset)],
        "name": options.name, "generation": inputs.generation.model_dump(),
    } | ({"data_dir": str(inputs.data_dir)} if inputs.data_dir else {})


def _read_from_data_folder(inputs: _Inputs, options: EvalOptions, judged: Manifest | None, notify) -> _Inputs:
    """INPUTS with the data folder of --data-dir (judging a run: else the one it was inferred
    from), checked complete for the suite's datasets: OpenCompass will read it, offline."""
    recorded = (judged.inputs.get("data_dir") if judged else None) or None
    folder = options.data_dir or (Path(recorded) if recorded else None)
    if folder is None:
        return inputs
    names = [item.name for item in inputs.datasets if isinstance(item, suites.SuiteDataset)]
    digest = datafiles.use_data_folder(folder, names, notify, options.dry_run)
    inferred_on = ((judged.fingerprint_inputs or {}).get("data") if judged else None)
    if inferred_on and inferred_on != digest:
        raise UsageError(f"run {judged.run_id} was inferred on other data than {folder} holds now for "
                         f"{', '.join(names)}; judge it on the data it was inferred on (the folder it names: "
                         f"{recorded}), or infer it again")
    return replace(inputs, data_dir=folder.expanduser().absolute(), data=digest)
