"""The test zygote (tests/zygote.py) runs a command as a new process would, and reports it as Popen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import wait_until
from tests.zygote import ForkedProcess, Zygote

REPORT = """\
import json, multiprocessing.process, os, sys, tempfile, threading, time
json.dump({
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "env": os.environ.get("ZYGOTE_TEST_VALUE"),
    "blas": os.environ.get("OPENBLAS_NUM_THREADS"),
    "umask": os.umask(0o022),
    "tmp": tempfile.gettempdir(),
    "tz": time.tzname[0],
    "main": sys.modules["__main__"].__file__,
    "mp_dir": multiprocessing.process.ORIGINAL_DIR,
    "prometheus": "prometheus_client" in sys.modules,
    "threads": threading.active_count(),
    "stdin": os.readlink("/proc/self/fd/0"),
}, sys.stdout)
sys.stderr.write("to stderr")
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Zygote:
    """The test process's zygote, running before a test changes what a child must not
    inherit from it (umask, environment)."""
    if conftest.ZYGOTE is None:
        pytest.skip("ALLMICRO_TEST_NO_ZYGOTE is set: servers start as plain subprocesses")
    script = _script(tmp_path_factory.mktemp("zygote"), "")
    assert conftest.ZYGOTE.popen([script], env=dict(os.environ), stdout=1, stderr=2).wait() == 0
    return conftest.ZYGOTE


def _script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "command.py"
    path.write_text(text)
    return str(path)


def test_a_child_runs_with_the_callers_argv_environment_cwd_umask_and_stdio(
    zygote: Zygote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path, REPORT)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "ZYGOTE_TEST_VALUE": "from the test", "TMPDIR": str(scratch)}
    env["TZ"] = "Europe/Ljubljana"
    old_umask = os.umask(0o027)
    try:
        with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
            process = zygote.popen([script, "3"], env=env, stdout=out.fileno(), stderr=err.fileno())
        assert process.wait(timeout=60) == 3
    finally:
        os.umask(old_umask)
    report = json.loads((tmp_path / "out").read_text())
    assert (tmp_path / "err").read_text() == "to stderr"
    assert report["argv"] == [script, "3"]
    assert report["cwd"] == str(tmp_path) == report["mp_dir"]
    assert report["env"] == "from the test"
    assert report["blas"] is None  # the zygote's own setting is not the child's
    assert report["umask"] == 0o027
    assert report["tmp"] == str(scratch)
    assert report["tz"] == "CET"
    assert report["main"] == script
    assert report["prometheus"] is False
    assert report["threads"] == 1
    assert report["stdin"] == os.readlink("/proc/self/fd/0")


def test_exit_codes_and_signals_reach_the_handle_as_popen_reports_them(
    zygote: Zygote, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    script = _script(
        tmp_path,
        f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\ntime.sleep(300)\n",
    )

    def started() -> ForkedProcess:
        ready.unlink(missing_ok=True)
        with (tmp_path / "log").open("ab") as log:
            process = zygote.popen(
                [script], env=dict(os.environ), stdout=log.fileno(), stderr=log.fileno()
            )
        wait_until(ready.exists, timeout=60, interval=0.02, what="the child to start")
        return process

    process = started()
    assert process.poll() is None and process.returncode is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == -signal.SIGTERM
    process.kill()  # gone already: nothing to signal, as with Popen

    process = started()
    assert Path(f"/proc/{process.pid}").exists()
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert process.poll() == -signal.SIGKILL
