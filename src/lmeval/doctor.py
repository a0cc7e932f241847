"""`lmeval doctor`: everything lmeval needs on this machine, checked in one go, each check ok,
warn or fail with what to do. Nothing is started but a short-lived probe in OpenCompass's venv
(lmeval_preflight: its imports, the config lmeval would write, what its evaluators need, the
model's tokenizer); nothing is downloaded. Beyond loopback, the only network it touches is a
TCP connect to the download host of a dataset that is missing (lmeval.datafiles).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import SecretStr

from lmeval import configgen, configplan, datadir, datafiles, gpus, suites, toolvenvs
from lmeval.datasets import UserDataset
from lmeval.exceptions import LmevalError, UsageError
from lmeval.launch import check_model, model_is_path, port_taken
from lmeval.ocenv import opencompass_env, venv_python
from lmeval.suites import SuiteDataset
from lmeval.tools import LMDEPLOY, OPENCOMPASS, Tool, find_executable, installed_version

NEEDED_BY = {"langdetect": "IFEval's language checks", "punkt_tab": "IFEval's sentence counts (NLTK)",
             "code runner": "LiveCodeBench (the runner's pyext)"}
DISK_FAIL_BYTES = 1 << 30
DISK_WARN_BYTES = 20 << 30
PROBE_SECONDS = 600


@dataclass(frozen=True)
class Check:
    check: str
    status: str  # ok | warn | fail
    detail: str  # what was found, and for warn/fail what to do


def check_gpus() -> Check:
    try:
        found = gpus.inventory()
    except LmevalError as error:
        return Check("GPUs", "fail", error.message)
    if not found:
        return Check("GPUs", "warn", "no NVIDIA driver answered: no server can run here (fine where lmeval only "
                                     "submits Slurm jobs, --launcher slurm, or uses --api-server)")
    listing = "; ".join(f"{gpu.index}: {gpu.name}, {gpu.memory_used >> 20} MiB used"
                        + (f", busy ({gpu.processes} processes)" if gpu.busy else ", free") for gpu in found)
    return Check("GPUs", "ok", listing)


def check_tool(tool: Tool, given: str | None) -> tuple[Check, Path | None]:
    try:
        executable = find_executable(tool, given)
    except UsageError as error:
        return Check(tool.name, "fail", error.message), None
    source = ("--" + tool.name if given else tool.env_var if os.environ.get(tool.env_var)
              else "lmeval setup" if toolvenvs.recorded_executable(tool.name) == executable else "PATH")
    problem = toolvenvs.import_problem(venv_python(executable), tool.name)
    where = f"{executable} (from {source}), version {installed_version(executable, tool.name)}"
    if problem:
        return Check(tool.name, "fail", f"{where} does not import: {problem}; make its venv again with "
                                        f"`lmeval setup` (or pass {tool.option})"), executable
    return Check(tool.name, "ok", where), executable


def _probe(opencompass: Path, datasets: tuple, model: str | None) -> tuple[dict | None, str | None]:
    """Run lmeval_preflight on the infer config lmeval would write for DATASETS (with --needs)
    and MODEL's tokenizer; (what the datasets' evaluators need and lack, its failure line)."""
    served = configplan.ServedModel(base_url="http://127.0.0.1:1", api_key=SecretStr("lmeval-doctor"),
                                    served_name="lmeval-doctor", tokenizer_path=model or "lmeval-doctor", in_flight=1)
    with tempfile.TemporaryDirectory(prefix="lmeval-doctor-") as folder:
        config = Path(folder) / "infer_config.py"
        config.write_text(configgen.render_config("infer", configplan.ConfigPlan(
            datasets=datasets, model_abbr="lmeval-doctor", target=served)))
        argv = [str(venv_python(opencompass)), "-m", "lmeval_preflight", str(config), "--needs"]
        if model:
            argv += ["--tokenizer", model]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_SECONDS, cwd=folder, check=False,
                                  env=opencompass_env(dict(os.environ)))
        except subprocess.TimeoutExpired:
            return None, f"the check in OpenCompass's venv did not end within {PROBE_SECONDS} s"
    needs, failed = None, None
    for line in done.stdout.splitlines():
        if line.startswith("lmeval preflight: needs: "):
            needs = json.loads(line.removeprefix("lmeval preflight: needs: "))
        elif line.startswith("lmeval preflight: failed: "):
            failed = line.removeprefix("lmeval preflight: failed: ")
    if done.returncode != 0 and failed is None:
        failed = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return needs, failed


def check_data(datasets: tuple, data_dir: Path | None = None) -> list[Check]:
    """Each dataset's data where OpenCompass reads it: there, or downloadable (warn), or neither
    (a run refuses to start: fail); in a data folder, as `lmeval data check` finds it. A user's
    file was read in full when resolved."""
    env = dict(os.environ)
    checks = [Check(f"data: {item.name}", "ok", item.path) for item in datasets if isinstance(item, UserDataset)]
    if data_dir is not None:
        return checks + check_data_folder(Path(data_dir).expanduser().absolute(),
                                          [item.name for item in datasets if isinstance(item, SuiteDataset)])
    for found in datafiles.check_data(list(datasets), env):
        name = f"data: {found.dataset}"
        if found.present:
            checks.append(Check(name, "ok", found.what))
        elif (why := datafiles.why_not_fetched(found, env)) is None:
            checks.append(Check(name, "warn", f"not in {found.what}; OpenCompass downloads it on first use"))
        else:
            checks.append(Check(name, "fail", f"not in {found.what}, and {why}: {datafiles.how_to_get(found)}"))
    return checks


def check_data_folder(folder: Path, names: list[str]) -> list[Check]:
    """The datasets NAMES in the data folder (--data-dir), each file against its manifest."""
    try:
        states = datadir.verify(folder, datadir.DataManifest.load(folder), names)
    except UsageError as error:
        return [Check("data folder", "fail", error.message)]
    return [Check(f"data: {state.dataset}", "ok", f"{state.detail}, in {folder}") if state.status == "present"
            else Check(f"data: {state.dataset}", "fail", f"{state.status}: {state.detail}; pull it with `lmeval data "
                                                         f"pull --datasets {state.dataset} --dest {folder}`")
            for state in states]


def check_inputs(opencompass: Path | None, task: str | None, files: tuple[Path, ...], model: str | None,
                 data_dir: Path | None = None) -> list[Check]:
    """The datasets (their data, and what their evaluators need) and the model, through the
    config lmeval would write for them; with a data folder (--data-dir), the suite's data there."""
    checks = []
    task = task or ("chat" if data_dir and not files else None)
    try:
        datasets = suites.resolve_datasets(task, None, files) if task or files else ()
    except UsageError as error:
        return [Check("datasets", "fail", error.message)]
    model_path = None
    if model is not None:
        try:
            model_path = check_model(model)
        except UsageError as error:
            return [Check("model", "fail", error.message)]
        if model_is_path(model_path) and not (Path(model_path) / "config.json").is_file():
            checks.append(Check("model", "fail", f"{model_path} has no config.json: not a model folder LMDeploy loads"))
            model_path = None
    checks += check_data(datasets, data_dir)
    if not datasets and model_path is None:
        return checks
    if opencompass is None:
        return checks + [Check("evaluators and tokenizer", "warn", "not checked: OpenCompass is not usable (above)")]
    tokenizer = model_path if model_path and model_is_path(model_path) else None
    # The probe reads a config; with a model alone, a small one carries its tokenizer.
    needs, failed = _probe(opencompass, datasets or suites.select_suite("chat", "ifeval"), tokenizer)
    if datasets and needs is None:
        checks.append(Check("evaluators", "fail", f"not checked: {failed}"))
    for need, problem in (needs or {}).items() if datasets else ():
        checks.append(Check(need, "fail" if problem else "ok",
                            f"{problem}; run `lmeval setup` again (it makes OpenCompass's venv with {need})" if problem
                            else f"in OpenCompass's venv, for {NEEDED_BY[need]}"))
    if model_path is not None:
        if tokenizer is None:
            checks.append(Check("model", "warn", f"{model_path} is a hub id: its tokenizer is downloaded on first use"))
        elif failed:
            checks.append(Check("model", "fail", f"{model_path}: its tokenizer does not load: {failed}"))
        else:
            checks.append(Check("model", "ok", f"{model_path}: config.json and tokenizer load"))
    return checks


def check_disk(work_dir: Path) -> Check:
    folder = work_dir.expanduser().absolute()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    detail = f"{free / (1 << 30):.1f} GiB free under {work_dir}"
    if free < DISK_FAIL_BYTES:
        return Check("disk", "fail", f"{detail}; free some, or pass -w on a disk with room")
    if free < DISK_WARN_BYTES:
        return Check("disk", "warn", f"{detail}; predictions of a suite take a few GiB")
    return Check("disk", "ok", detail)


def check_ports(host: str) -> Check:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    except OSError as error:
        return Check("ports", "fail", f"cannot listen on {host} ({error.strerror}); pass another --host")
    reason = port_taken(host, port)
    return Check("ports", "ok" if reason is None else "fail",
                 f"servers can listen on {host}" if reason is None else f"{host}: {reason}")


def check_settings(sources: dict[str, str], values: dict) -> Check:
    """Where each value lmeval doctor was given came from: the command line, the defaults file."""
    def text(value) -> str:
        return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    shown = [f"{name}={text(values[name])} ({source})" for name, source in sources.items() if source != "default"]
    return Check("settings", "ok", "\n".join(shown) if shown else "all defaults (no lmeval.toml, no options)")


def run_checks(values: dict, sources: dict[str, str]) -> list[Check]:
    checks = [check_gpus()]
    lmdeploy_check, _ = check_tool(LMDEPLOY, values.get("lmdeploy"))
    opencompass_check, opencompass = check_tool(OPENCOMPASS, values.get("opencompass"))
    checks += [lmdeploy_check, opencompass_check]
    usable = opencompass if opencompass_check.status == "ok" else None
    checks += check_inputs(usable, values.get("task"), tuple(values.get("dataset_files") or ()), values.get("model"),
                           values.get("data_dir"))
    checks += [check_disk(Path(values.get("work_dir") or "outputs")), check_ports(values.get("host") or "127.0.0.1"),
               check_settings(sources, values)]
    return checks


def as_json(checks: list[Check]) -> str:
    return json.dumps([asdict(check) for check in checks], indent=2)
