"""Dump the option table of the real ``lmdeploy serve api_server`` parser.

Run it with the Python of a venv where the REAL LMDeploy is installed (it
needs no GPU; only the CLI modules are imported)::

    /tmp/venvs/ld/bin/python tests/standin/dump_flags.py > tests/standin/api_server_flags_0.18.txt

Output: one line per option, sorted by flag::

    FLAG NARGS [type=T] [choices=C1,C2,...] [dest=D]

* FLAG   - the long option string (e.g. ``--server-port``); options with
           several strings (e.g. ``-h --help``) get one line each.
* NARGS  - ``0`` for flags taking no value (store_true, ...), ``1`` for a
           single value (argparse nargs=None), otherwise argparse's
           nargs (``*``, ``+``, ``?`` or an int).
* type=  - the name of the converter (``int``, ``float``, ``str``, ``loads``
           for json.loads, ``_parse`` for the quant-policy parser); omitted
           for flags without a value.
* choices= - comma-joined ``str()`` of the allowed values, if any.
* dest=  - only when the destination is not the one argparse derives from
           the flag (e.g. ``--async`` -> ``async_``).

The first two fields are always ``FLAG NARGS``.  The same formatting code
(``describe_parser`` in ``standin_server.py``) is applied to the stand-in's
parser by the tests, so the two tables can be compared line by line.
The positional ``model_path`` and ``-h/--help`` are not listed.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from standin_server import describe_parser  # noqa: E402  (stdlib only)


def real_api_server_parser():
    """Build the real CLI exactly as ``lmdeploy.cli.entrypoint.run`` does and
    return the ``serve api_server`` sub-parser."""
    import argparse
    import contextlib

    # lmdeploy's logger writes import-time warnings to (the then) stdout:
    # send them to stderr so stdout stays a clean table
    with contextlib.redirect_stdout(sys.stderr):
        from lmdeploy.cli.cli import CLI
        from lmdeploy.cli.lite import SubCliLite
        from lmdeploy.cli.serve import SubCliServe

    CLI.add_parsers()
    SubCliServe.add_parsers()
    SubCliLite.add_parsers()
    for action in SubCliServe.parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices['api_server']
    raise RuntimeError('api_server sub-parser not found')


def main():
    parser = real_api_server_parser()
    import lmdeploy
    sys.stdout.write(f'# lmdeploy {lmdeploy.__version__} serve api_server\n')
    for line in describe_parser(parser):
        sys.stdout.write(line + '\n')


if __name__ == '__main__':
    main()
