import argparse
import os
import subprocess
import sys

import pytest
import torch

from clipig.run import threads


def test_threads_must_be_a_positive_whole_number():
    assert threads.positive_int("3") == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
            threads.positive_int(bad)


@pytest.mark.parametrize("text, cpus", [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000", 1),
                                        ("garbage", None)])
def test_container_cpu_quota(tmp_path, text, cpus):
    (tmp_path / "cpu.max").write_text(text)
    assert threads.cpu_quota(str(tmp_path / "cpu.max")) == cpus
    assert threads.cpu_quota(str(tmp_path / "missing")) is None


def test_configure_sets_and_caps_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert threads.configure(1) == 1
        torch.set_num_threads(2)
        monkeypatch.setattr(threads, "cpu_quota", lambda: 1)
        assert threads.configure(None) == 1  # a quota of one CPU: one thread
        assert threads.usable_cores() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_render_rejects_zero_threads_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "clipig", "x.yaml", "--threads", "0"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--threads: must be a whole number of at least 1, got '0'" in result.stderr


@pytest.mark.parametrize("busy, policy", [(0.0, None), (0.4, None), (0.5, "PASSIVE"), (1.7, "PASSIVE"),
                                          (None, "PASSIVE")])
def test_idle_openmp_threads_sleep_where_other_processes_keep_the_cores_busy(busy, policy):
    """Quiet machine: OpenMP's default (threads spin a moment); busy or unknown: PASSIVE."""
    environ = {}
    assert threads.choose_wait_policy(environ, busy=lambda: busy) == policy
    assert environ.get("OMP_WAIT_POLICY") == policy


def test_the_users_wait_policy_is_kept_and_the_load_not_even_sampled():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.choose_wait_policy(environ, busy=lambda: pytest.fail("sampled")) == "ACTIVE"


def test_the_cores_other_processes_keep_busy_from_proc_stat(tmp_path):
    """Idle and iowait jiffies are no one's work; the others' busy seconds count over the wall time."""
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 5 0 5 35 5 0 0 0 0 0\n")
    load = threads.OtherLoad(str(stat))
    stat.write_text("cpu  10 0 10 9070 9010 0 0 0 0 0\n")  # only idle and iowait went on
    assert load.cores() == 0.0
    stat.write_text(f"cpu  {10 + 1000 * os.sysconf('SC_CLK_TCK')} 0 10 70 10 0 0 0 0 0\n")  # 1000 busy seconds
    assert load.cores() > 100
    assert threads.OtherLoad(str(tmp_path / "missing")).cores() is None
    measured = threads.others_busy(interval=0.05)
    assert measured is None or 0.0 <= measured <= (os.cpu_count() or 1)


@pytest.mark.slow
def test_importing_clipig_keeps_a_wait_policy_the_user_set():
    code = "import clipig, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {**os.environ, "OMP_WAIT_POLICY": "ACTIVE"}
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout == "ACTIVE\n"


def test_the_tests_run_with_sleeping_openmp_threads():
    """conftest sets PASSIVE before torch loads (the suite runs two processes on two cores, and its
    subprocesses inherit it): spinning, idle threads took the cores from the subprocesses and the other runs
    of the suite (a table of the quality benchmark took 77 s instead of 9 s beside one other run)."""
    assert os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"
