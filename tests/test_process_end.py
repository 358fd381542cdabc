"""How a vae-run process ends (vaerun.cli.process_end): everything a normal exit does that anyone can see,
without the interpreter's teardown; an uncaught exception still the ordinary way."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import VAE_RUN

#: a stand-in for main(): a later exit handler, a thread still running, a log file, output still in the
#: buffer, and an object whose finaliser only the interpreter's teardown would run; then ENDING
PROGRAM = """
import atexit, logging, sys, threading, time
from vaerun.cli.process_end import without_teardown

class Finalised:
    def __del__(self):
        print("finalised", flush=True)

kept = Finalised()
written = threading.Event()
with without_teardown():
    logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
    atexit.register(print, "the handler registered later ran")
    # still running when main ends, and prints after main's own line whatever the machine's load
    threading.Thread(target=lambda: (written.wait(), time.sleep(0.2), print("the thread ended"))).start()
    logging.getLogger("run").info("logged")
    print("written, not flushed", end=" ")
    written.set()
    ENDING
"""


def end_with(ending: str, tmp_path):
    program = textwrap.dedent(PROGRAM).replace("ENDING", ending)
    result = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path / "run.log")], capture_output=True, text=True, timeout=60
    )
    return result, (tmp_path / "run.log").read_text()


@pytest.mark.parametrize(
    ("ending", "status", "said"),
    [
        ("pass", 0, ""),
        ("raise SystemExit(2)", 2, ""),
        ("sys.exit('vae-run: error: x')", 1, "vae-run: error: x"),
    ],
)
def test_an_ending_of_the_programs_choosing_keeps_all_a_normal_exit_does_but_the_teardown(
    ending, status, said, tmp_path
):
    result, log = end_with(ending, tmp_path)
    assert result.returncode == status
    assert result.stderr.strip() == said
    # in the order of a normal exit: the thread joined, then the later handler, then the buffer written out
    assert result.stdout == "written, not flushed the thread ended\nthe handler registered later ran\n"
    assert "INFO:run:logged" in log
    assert "finalised" not in result.stdout  # the teardown, skipped


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device that is always full")
def test_output_that_cannot_be_written_at_the_end_is_one_line_and_pythons_status(tmp_path):
    """Buffered output into a full device fails when it is flushed at exit: said, not silently lost."""
    result, _ = end_with("sys.stdout = open('/dev/full', 'w'); print('lost')", tmp_path)
    assert result.returncode == 120
    assert result.stderr == "vae-run: error: /dev/full: [Errno 28] No space left on device\n"


def test_an_uncaught_exception_ends_the_ordinary_way_with_its_traceback(tmp_path):
    result, log = end_with("raise ValueError('a defect')", tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ValueError: a defect" in result.stderr
    assert "finalised" in result.stdout and "written, not flushed" in result.stdout
    assert "INFO:run:logged" in log


def test_help_into_a_pipe_whose_reader_has_gone_ends_silently_as_sigpipe_would(tmp_path):
    """`vae-run --help | head -1`: no traceback, and the status of a program that SIGPIPE stopped."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(VAE_RUN), "--help"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    assert result.returncode == 128 + 13
    assert result.stderr == ""
