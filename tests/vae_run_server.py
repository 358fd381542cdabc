"""A warmed-up ``vae-run`` for the end-to-end tests: one process per test worker imports the heavy libraries
(torch, Lightning, torchvision, ...) once, then forks a child per run that executes exactly what the
``vae-run`` console script does (``sys.exit(main())`` with ``sys.argv`` set) in the test's directory and
environment, its output to files. Starting a fresh interpreter costs ~5 s of imports per run; a fork costs
milliseconds, and each child starts from the same untouched state, so runs cannot leak into each other.

The server runs no torch operation before forking (OpenMP's thread pool does not survive a fork). What a
library reads from the environment at import time (OMP_NUM_THREADS, say) is read once, when the server
starts. Tests that are about the process itself (signals, import laziness, an installed wheel) start the
real console script instead.

The same server runs the repository's scripts (scripts/*.py, most of which import what vae-run does): with
"script" in the request, the child runs that file as ``python SCRIPT ARGS...`` would, its folder first on
``sys.path``.

Protocol, one JSON line each way: request {args, cwd, env, stdout, stderr[, script]}; reply {"pid": ...},
then {"returncode": ...} when the child has ended.
"""

from __future__ import annotations

import json
import os
import sys


def _warm_up() -> dict[str, str]:
    """What a training run imports anyway, in the order vae-run's own imports reach them; returns the
    environment variables those imports set (Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK), which every
    child sets again over the test's environment, as the same imports in a fresh process would."""
    before = dict(os.environ)
    import hydra  # noqa: F401
    import matplotlib  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import sklearn  # noqa: F401
    import tensorboard  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    return {key: value for key, value in os.environ.items() if before.get(key) != value}


def _become_vae_run(request: dict, script: str, set_by_imports: dict[str, str]) -> None:
    """In the forked child: take the run's directory, environment and output files, then do what the
    console script (or the request's script) does. Never returns; SystemExit unwinds to the interpreter's
    own exit, and an exception's traceback goes to stderr with exit status 1, as in a fresh process."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(set_by_imports)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stdin, for its lifetime
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    if "script" in request:
        import runpy

        sys.argv = [request["script"], *request["args"]]
        sys.path.insert(0, os.path.dirname(request["script"]))
        runpy.run_path(request["script"], run_name="__main__")
        sys.exit(0)
    sys.argv = [script, *request["args"]]

    from vaerun.cli.main import main

    sys.exit(main())


def serve(script: str, set_by_imports: dict[str, str]) -> None:
    requests = sys.stdin
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become_vae_run(request, script, set_by_imports)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    set_by_imports = _warm_up()
    print(json.dumps({"ready": True}), flush=True)
    serve(sys.argv[1], set_by_imports)
