"""Run by lmeval in OpenCompass's venv while the servers load (never imported by lmeval):
`python -m lmeval_preflight CONFIG... [--tokenizer PATH]... [--data]`.

It does what OpenCompass will do first, so that a broken install, a config OpenCompass cannot
load or a tokenizer it cannot read fails in seconds instead of after a 32B model has loaded:
import OpenCompass, load each config with OpenCompass's own loader (the model class the
configs name included), and load each local tokenizer as OpenAISDK will. Prints one line:
`lmeval preflight: ok`, or `lmeval preflight: failed: TYPE: MESSAGE`, the traceback on stderr.
With --data (for `lmeval doctor`) it first prints `lmeval preflight: data: JSON`, whether each
dataset's files are in COMPASS_DATA_CACHE (looked up, never downloaded).
"""
import json
import os
import sys
import traceback


def data_present(datasets):
    """abbr -> [where its files would be, whether they are there], as OpenCompass's
    get_data_path looks for them in local mode (without its download)."""
    from opencompass.utils.datasets_info import DATASETS_MAPPING

    cache = os.environ.get("COMPASS_DATA_CACHE", "")
    found = {}
    for dataset in datasets:
        path = dataset.get("path")
        if not isinstance(path, str):
            continue
        candidates = [path] if os.path.isabs(path) else [os.path.join(cache, path)]
        local = DATASETS_MAPPING.get(path, {}).get("local") if not os.path.isabs(path) else None
        if local:
            candidates.append(os.path.join(cache, local))
        found[dataset["abbr"]] = [candidates[-1], any(os.path.exists(c) for c in candidates)]
    return found


def check(configs, tokenizers, data=False):
    from mmengine.config import Config
    from opencompass.utils.run import try_fill_in_custom_cfgs

    for path in configs:
        config = try_fill_in_custom_cfgs(Config.fromfile(path, format_python_code=False))
        if not config.get("datasets"):
            raise ValueError(f"{path} holds no datasets")
        if data:
            print(f"lmeval preflight: data: {json.dumps(data_present(config['datasets']))}", flush=True)
    if tokenizers:
        from transformers import AutoTokenizer

        for path in tokenizers:
            AutoTokenizer.from_pretrained(path)


def main(argv=None):
    configs, tokenizers, data = [], [], False
    args = iter(sys.argv[1:] if argv is None else argv)
    for arg in args:
        if arg == "--tokenizer":
            tokenizers.append(next(args))
        elif arg == "--data":
            data = True
        else:
            configs.append(arg)
    try:
        check(configs, tokenizers, data)
    except BaseException as error:  # noqa: BLE001 - every failure is the answer
        traceback.print_exc()
        print(f"lmeval preflight: failed: {type(error).__name__}: {error}".splitlines()[0], flush=True)
        return 1
    print("lmeval preflight: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
