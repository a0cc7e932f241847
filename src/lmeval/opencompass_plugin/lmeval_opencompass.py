"""Runs inside OpenCompass's processes (its venv), never in lmeval's: lmeval puts this folder on
OpenCompass's PYTHONPATH and names the class in the configs it writes.

OpenAISDK, but once built (after every import of the task process, before any request) it runs
one full collection and moves every object left to the garbage collector's permanent generation
(gc.freeze). The task process imports torch and transformers, so otherwise each full
collection walks their objects too: 0.3-0.4 s with every request thread stopped (measured on 2
cores), long enough to leave server slots idle (bench/inference_bench.py).
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
