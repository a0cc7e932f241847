"""Parse a command line with the real LMDeploy parser and print the result as JSON.

Runs under the LMDeploy venv (scripts/setup makes it); the tests hand it the argv lmeval builds.
"""

import json
import sys

from lmdeploy.cli.cli import CLI
from lmdeploy.cli.lite import SubCliLite
from lmdeploy.cli.serve import SubCliServe

CLI.add_parsers()
SubCliServe.add_parsers()
SubCliLite.add_parsers()
args = CLI.parser.parse_args(sys.argv[1:])
print(json.dumps({key: value for key, value in vars(args).items() if not callable(value)}, default=str))
