import subprocess
import sys

import pytest

from nemo_latent_thoughts import locks
from nemo_latent_thoughts.errors import NLTError

HOLD = ("import sys, time; from nemo_latent_thoughts import locks\n"
        "with locks.exclusive(sys.argv[1], sys.argv[2], what='holder'):\n"
        "    print('held', flush=True); time.sleep(600)")


@pytest.fixture
def hold():
    """Start a process that holds a lock: hold(directory, name) -> its Popen (killed at the end)."""
    started = []

    def start(directory, name=locks.LOCK):
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory), name], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline() == "held\n"
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_second_writer_is_refused_naming_the_holder_until_it_dies(tmp_path, hold):
    holder = hold(tmp_path)
    assert locks.holder(tmp_path).startswith(f"PID {holder.pid} on ")
    with pytest.raises(NLTError, match=rf"{tmp_path}/.lock: held by PID {holder.pid} on .* \(holder\); one writer"):
        with locks.exclusive(tmp_path):
            pass
    holder.kill()  # kill -9 releases the lock at once: no stale lock
    holder.wait()
    assert locks.holder(tmp_path) is None
    with locks.exclusive(tmp_path, what="me"):
        with locks.exclusive(tmp_path):  # the same process may take it again
            assert "(me)" in locks.holder(tmp_path)
    assert locks.holder(tmp_path) is None


def test_locks_of_other_names_do_not_block_each_other(tmp_path, hold):
    hold(tmp_path, ".lock-shard_00000")
    with locks.exclusive(tmp_path, ".lock-shard_00001"):
        with pytest.raises(NLTError, match="held by"):
            with locks.exclusive(tmp_path, ".lock-shard_00000"):
                pass


def test_stale_temps_are_removed_except_below_a_live_writer(tmp_path, hold):
    for d in ("a", "b/c", "d"):
        (tmp_path / d / ".tmp-out.jsonl-x").mkdir(parents=True)
    (tmp_path / "d" / ".tmp-file").write_text("")
    hold(tmp_path / "b", ".lock-shard_00000")
    with locks.exclusive(tmp_path):  # the caller's own lock does not protect anything from it
        locks.remove_stale_temps(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob(".tmp-*")) == ["b/c/.tmp-out.jsonl-x"]


def test_a_waiting_writer_says_whom_it_waits_for_and_goes_on_when_the_holder_dies(tmp_path, hold, caplog):
    """`wait=True` (runs sharing one cached base model): a log line, then the lock once it is free."""
    import threading

    holder = threading.Timer(1.0, hold(tmp_path).kill)
    holder.start()
    with caplog.at_level("INFO", logger="nemo_latent_thoughts.locks"):
        with locks.exclusive(tmp_path, what="waiter", wait=True):
            assert "(waiter)" in locks.holder(tmp_path)
    holder.join()
    assert "held by PID" in caplog.text and "(holder); waiting for it" in caplog.text
    assert locks.holder(tmp_path) is None
