"""Run by lmeval in OpenCompass's venv (never imported by lmeval):
`python -m lmeval_forkserver SOCKET`. It imports OpenCompass once, then forks every OpenCompass
process of one lmeval command from itself (lmeval.forkserver is the other end).

It listens on the Unix socket SOCKET (in a folder only its user can enter; the path appears
once it listens) before it imports anything, so lmeval can connect at once; requests wait
until the imports are done. A failed import is written to its output and otherwise ignored:
each child then imports again and fails as a new process would, with the same error in its
own log.

A request is one JSON line on a connection of its own: `{"entry": "module:function", "argv":
[...], "cwd": ..., "env": {...}, "log": ..., "name": ...}`. The child runs `sys.exit(function())`
with that sys.argv, folder, environment, output (appended to the log) and process name, in a
session of its own. The answer is a line `{"pid": N}`, then `{"exit": CODE}` (-N: signal N)
when the child has ended. The connection is the child's lifeline: closed by lmeval while the
child runs, the child's session is killed.
"""
import importlib
import json
import os
import select
import signal
import socket
import sys
import traceback

from lmeval_fork import fork_child

# What OpenCompass's CLI and its tasks import, lmeval's model class and runner included.
PRELOAD = ("opencompass.cli.main", "opencompass.tasks", "opencompass.datasets", "opencompass.models",
           "opencompass.runners", "opencompass.partitioners", "opencompass.summarizers", "opencompass.utils.run",
           "transformers", "lmeval_opencompass")
REAP_SECONDS = 0.05


def preload():
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - the child that needs it fails with it
            print(f"lmeval forkserver: importing {name} failed:", flush=True)
            traceback.print_exc()
            sys.stderr.flush()


def entry_point(spec, argv):
    """What the child runs: `sys.exit(function())` of SPEC (`module:function`), with sys.argv ARGV."""
    module, function = spec.split(":")

    def run():
        sys.argv = list(argv)
        sys.exit(getattr(importlib.import_module(module), function)())

    return run


def start(request, sockets):
    """Fork the child REQUEST asks for; it holds none of the server's SOCKETS (else the listener
    would outlive the server, and lmeval connect to a server that is gone)."""
    return fork_child(entry_point(request["entry"], request["argv"]), request["log"], new_session=True, cwd=request["cwd"],
                      environ=request["env"], name=request.get("name"), close=sockets)


def send(connection, message):
    connection.sendall((json.dumps(message) + "\n").encode())


def let_go(connection):
    """Whether lmeval closed CONNECTION."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def kill_session(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(listener):
    asking = {}  # connection -> what it has sent of its request
    children = {}  # pid -> its connection, None once lmeval let go of it
    while True:
        lifelines = [connection for connection in children.values() if connection is not None]
        readable, _, _ = select.select([listener, *asking, *lifelines], [], [], REAP_SECONDS)
        for connection in readable:
            if connection is listener:
                accepted, _ = listener.accept()
                asking[accepted] = b""
                continue
            try:
                data = connection.recv(1 << 16)
            except OSError:
                data = b""
            if connection not in asking:  # a running child's lifeline: closed, or a stray byte
                if not data:
                    pid = next(pid for pid, held in children.items() if held is connection)
                    kill_session(pid)
                    connection.close()
                    children[pid] = None
                continue
            if not data:
                del asking[connection]
                connection.close()
                continue
            asking[connection] += data
            if b"\n" not in asking[connection]:
                continue
            request = json.loads(asking.pop(connection))
            if let_go(connection):  # lmeval stopped it while it waited for the imports
                connection.close()
                continue
            pid = start(request, [listener, *asking, *filter(None, children.values()), connection])
            try:
                send(connection, {"pid": pid})
                children[pid] = connection
            except OSError:  # lmeval let go of it before it started
                kill_session(pid)
                connection.close()
                children[pid] = None
        reap(children)


def reap(children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is None:
            continue
        try:
            send(connection, {"exit": os.waitstatus_to_exitcode(status)})
        except OSError:
            pass
        connection.close()


def leave(path):
    """On SIGTERM (lmeval stopping it, or dying: PR_SET_PDEATHSIG): remove the socket and its
    folder, which lmeval would remove only if it lived, then end as SIGTERM ends a process."""
    for remove, what in ((os.unlink, path), (os.rmdir, os.path.dirname(path))):
        try:
            remove(what)
        except OSError:
            pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def main():
    path = sys.argv[1]
    signal.signal(signal.SIGTERM, lambda *_: leave(path))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    listener.listen(64)
    os.rename(path + ".new", path)  # there only once it listens: lmeval connects when it sees it
    preload()
    print("lmeval forkserver: ready", flush=True)
    serve(listener)


if __name__ == "__main__":
    main()
