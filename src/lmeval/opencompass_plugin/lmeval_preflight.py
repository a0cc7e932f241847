"""Run by lmeval in OpenCompass's venv while the servers load (never imported by lmeval):
`python -m lmeval_preflight CONFIG... [--tokenizer PATH]...`.

It does what OpenCompass will do first, so that a broken install, a config OpenCompass cannot
load or a tokenizer it cannot read fails in seconds instead of after a 32B model has loaded:
import OpenCompass, load each config with OpenCompass's own loader (the model class the
configs name included), and load each local tokenizer as OpenAISDK will. Prints one line:
`lmeval preflight: ok`, or `lmeval preflight: failed: TYPE: MESSAGE`, the traceback on stderr.
"""
import sys
import traceback


def check(configs, tokenizers):
    from mmengine.config import Config
    from opencompass.utils.run import try_fill_in_custom_cfgs

    for path in configs:
        config = try_fill_in_custom_cfgs(Config.fromfile(path, format_python_code=False))
        if not config.get("datasets"):
            raise ValueError(f"{path} holds no datasets")
    if tokenizers:
        from transformers import AutoTokenizer

        for path in tokenizers:
            AutoTokenizer.from_pretrained(path)


def main(argv):
    configs, tokenizers = [], []
    args = iter(argv)
    for arg in args:
        if arg == "--tokenizer":
            tokenizers.append(next(args))
        else:
            configs.append(arg)
    try:
        check(configs, tokenizers)
    except BaseException as error:  # noqa: BLE001 - every failure is the answer
        traceback.print_exc()
        print(f"lmeval preflight: failed: {type(error).__name__}: {error}".splitlines()[0], flush=True)
        return 1
    print("lmeval preflight: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
