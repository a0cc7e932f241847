"""OpenCompass plug-in for the benchmark's experiments (bench/inference_bench.py --gc-freeze): the
OpenAISDK model, but once built (after every import of the task process, before any request)
it runs one full collection and moves every object left to the garbage collector's permanent
generation (gc.freeze). The task process imports torch and transformers, so without that each
full collection walks their objects too: 0.3-0.4 s with every request thread stopped, on 2 cores.

Importable only with this folder on PYTHONPATH; it imports OpenCompass, so it runs in
OpenCompass's venv, never in lmeval's.
"""
import gc

from opencompass.models import OpenAISDK
from opencompass.registry import MODELS


@MODELS.register_module()
class OpenAISDKFrozenGC(OpenAISDK):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        gc.collect()
        gc.freeze()
