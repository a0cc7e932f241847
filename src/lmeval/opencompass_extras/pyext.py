"""The one part of pyext 0.7 that OpenCompass uses, for Python 3.11 and later, installed into
OpenCompass's venv by `lmeval setup` (as the distribution lmeval-pyext; never imported by lmeval).

OpenCompass's LiveCodeBench runner (`datasets/livecodebench/testing_util.py`) builds each
program with `pyext.RuntimeModule.from_string(name, doc, source)`. pyext 0.7, its last release
(2014), calls `inspect.getargspec` when imported, which Python 3.11 removed, so it can neither be
installed nor imported there; OpenCompass's metadata therefore skips it on 3.11, its import is
caught, and every program is then recorded as a compilation error: pass@1 0.00 without a word.

`from_string` here does what pyext 0.7's does: run SOURCE in a fresh namespace, then make a
module of the names it defined, registered in sys.modules. (pyext also leaves out the names
its own module happens to define, which no program relies on; upstream LiveCodeBench now runs
the source in a module's own namespace the same way.)
"""

import sys
import types

__version__ = "0.7"


class _RuntimeModule:
    """Modules made at run time, as `pyext.RuntimeModule`."""

    @staticmethod
    def from_objects(name, docstring="", **objects):
        module = types.ModuleType(name, docstring)
        module.__dict__.update(objects)
        module.__file__ = "<runtime_module>"
        sys.modules[name] = module
        return module

    @staticmethod
    def from_string(name, docstring, source=None):
        """`from_string(name, source)` or `from_string(name, docstring, source)`, as in pyext."""
        if source is None:
            docstring, source = "", docstring
        namespace = {}
        exec(source, namespace)  # running the program is the point
        namespace.pop("__builtins__", None)
        return _RuntimeModule.from_objects(name, docstring, **namespace)

    def __call__(self, *args, **kwargs):
        return self.from_objects(*args, **kwargs)


RuntimeModule = _RuntimeModule()
