"""Run by lmeval in OpenCompass's venv while the servers load (never imported by lmeval):
`python -m lmeval_preflight CONFIG... [--tokenizer PATH]... [--needs]`.

It does what OpenCompass will do first, so that a broken install, a config OpenCompass cannot
load or a tokenizer it cannot read fails in seconds instead of after a 32B model has loaded:
import OpenCompass, load each config with OpenCompass's own loader (the model class the
configs name included), check that the venv has what the configs' evaluators need (IFEval:
langdetect and NLTK's punkt_tab; LiveCodeBench: a code runner that can build a program), and
load each local tokenizer as OpenAISDK will. Prints one line: `lmeval preflight: ok`, or
`lmeval preflight: failed: TYPE: MESSAGE`, the traceback on stderr. With --needs (for
`lmeval doctor`) it first prints `lmeval preflight: needs: JSON`, each need of the configs'
evaluators with what is wrong (null: nothing), and does not fail on them.
"""
import json
import sys
import traceback

FIX = "run `lmeval setup` again: it makes OpenCompass's venv with it"


def langdetect():
    import langdetect  # noqa: F401 - the import is the check


def punkt_tab():
    import nltk

    nltk.data.find("tokenizers/punkt_tab/english/")


def code_runner():
    """What LiveCodeBench's runner does with each program, on one that must build."""
    from opencompass.datasets.livecodebench import testing_util

    if testing_util.RuntimeModule is None:
        raise ImportError("OpenCompass's LiveCodeBench runner found no pyext (pyext 0.7 cannot be installed on "
                          "Python 3.11+), so every program would be scored a compilation error")
    built = testing_util.RuntimeModule.from_string("lmeval_preflight_program", "", "def answer():\n    return 42\n")
    if built.answer() != 42:
        raise RuntimeError("the LiveCodeBench runner's pyext does not build programs as OpenCompass expects")


# What each evaluator (by class name) needs beyond OpenCompass itself, and the check of each.
NEEDS = {"IFEvaluator": ("langdetect", "punkt_tab"), "LCBCodeGenerationEvaluator": ("code runner",)}
CHECKS = {"langdetect": langdetect, "punkt_tab": punkt_tab, "code runner": code_runner}


def evaluator_names(datasets):
    names = set()
    for dataset in datasets:
        kind = dataset.get("eval_cfg", {}).get("evaluator", {}).get("type")
        names.add(kind if isinstance(kind, str) else getattr(kind, "__name__", ""))
    return names


def needs_of(datasets):
    """need -> what is wrong (None: nothing), for the evaluators of DATASETS."""
    problems = {}
    for evaluator in sorted(evaluator_names(datasets)):
        for need in NEEDS.get(evaluator, ()):
            try:
                CHECKS[need]()
                problems[need] = None
            except Exception as error:  # noqa: BLE001 - every failure is the answer
                said = str(error).strip().splitlines()
                problems[need] = f"{type(error).__name__}: {said[0] if said else ''}"
    return problems


def check(configs, tokenizers, report_needs=False):
    from mmengine.config import Config
    from opencompass.utils.run import try_fill_in_custom_cfgs

    datasets = []
    for path in configs:
        config = try_fill_in_custom_cfgs(Config.fromfile(path, format_python_code=False))
        if not config.get("datasets"):
            raise ValueError(f"{path} holds no datasets")
        datasets += config["datasets"]
    problems = needs_of(datasets)
    if report_needs:
        print(f"lmeval preflight: needs: {json.dumps(problems)}", flush=True)
    else:
        for need, problem in problems.items():
            if problem:
                raise RuntimeError(f"OpenCompass's venv lacks {need}, which the suite's evaluators need ({problem}); "
                                   f"{FIX}")
    if tokenizers:
        from transformers import AutoTokenizer

        for path in tokenizers:
            AutoTokenizer.from_pretrained(path)


def main(argv=None):
    configs, tokenizers, report_needs = [], [], False
    args = iter(sys.argv[1:] if argv is None else argv)
    for arg in args:
        if arg == "--tokenizer":
            tokenizers.append(next(args))
        elif arg == "--needs":
            report_needs = True
        else:
            configs.append(arg)
    try:
        check(configs, tokenizers, report_needs)
    except BaseException as error:  # noqa: BLE001 - every failure is the answer
        traceback.print_exc()
        print(f"lmeval preflight: failed: {type(error).__name__}: {error}".splitlines()[0], flush=True)
        return 1
    print("lmeval preflight: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
