"""The thread policy (workbench/threads.py): what is set before torch loads, what the user's settings override,
and the CLI's --threads."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from workbench import threads
from workbench.threads import GOMP_SPINCOUNT, KMP_BLOCKTIME, apply, configure_environment

ROOT = Path(__file__).resolve().parents[1]
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "WORKBENCH_THREADS",
             "WORKBENCH_THREAD_POLICY")


def test_defaults_fill_only_what_the_user_left_unset():
    env = {}
    assert configure_environment(env) == {"GOMP_SPINCOUNT": GOMP_SPINCOUNT, "KMP_BLOCKTIME": KMP_BLOCKTIME}
    env = {"GOMP_SPINCOUNT": "0"}
    configure_environment(env)
    assert env == {"GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": KMP_BLOCKTIME}
    env = {"OMP_WAIT_POLICY": "PASSIVE"}  # a wait policy of theirs decides the spin: no count of ours beside it
    assert configure_environment(env) == {"OMP_WAIT_POLICY": "PASSIVE"} and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"WORKBENCH_THREAD_POLICY": "off"}
    assert configure_environment(env) == {} and env == {"WORKBENCH_THREAD_POLICY": "off"}
    env = {"WORKBENCH_THREADS": "3", "OMP_NUM_THREADS": "8"}  # ours is the more specific request
    configure_environment(env)
    assert env["OMP_NUM_THREADS"] == "3"


def _child(code: str, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    out = subprocess.run([sys.executable, "-c", code], env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


REPORT = ("import json, os, sys; before = 'torch' in sys.modules; import workbench.cli; import torch; "
          "import workbench.threads as t; print(json.dumps({'env': {k: os.environ.get(k) for k in "
          "('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME', 'OMP_NUM_THREADS')}, 'threads': "
          "torch.get_num_threads(), 'torch_before': before, 'spin_applied': t.apply().spin_applied}))")


def test_importing_the_cli_sets_the_wait_policy_before_torch_loads():
    got = _child(REPORT)
    assert not got["torch_before"] and got["spin_applied"]
    assert got["env"] == {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": GOMP_SPINCOUNT, "KMP_BLOCKTIME": KMP_BLOCKTIME,
                          "OMP_NUM_THREADS": None}


def test_users_environment_wins_in_a_fresh_process():
    got = _child(REPORT, OMP_WAIT_POLICY="PASSIVE", WORKBENCH_THREADS="1")
    assert got["env"] == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None, "KMP_BLOCKTIME": None,
                          "OMP_NUM_THREADS": "1"}
    assert got["threads"] == 1  # torch's pool started at the requested size
    got = _child(REPORT, WORKBENCH_THREAD_POLICY="off")
    assert got["env"]["GOMP_SPINCOUNT"] is None and got["env"]["KMP_BLOCKTIME"] is None


def test_torch_imported_first_is_reported():
    got = _child("import json, torch, workbench.threads as t; print(json.dumps({'spin_applied': "
                 "t.apply().spin_applied}))")
    assert got["spin_applied"] is False


@pytest.fixture
def fake_cli(monkeypatch):
    """workbench.cli with one subcommand `probe` (which has its own --threads, as `ablate` does) that records
    the thread count and environment it runs with."""
    import workbench.cli as cli

    seen = {}

    def probe(args):
        seen.update(threads=torch.get_num_threads(), omp=os.environ.get("OMP_NUM_THREADS"), arg=args.threads)
        return 0

    def build_parser():
        parser = argparse.ArgumentParser(prog="workbench")
        p = parser.add_subparsers(dest="command", required=True).add_parser("probe")
        p.add_argument("--threads", type=int, default=None)
        p.set_defaults(func=probe)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    for k in ("OMP_NUM_THREADS", "WORKBENCH_THREADS"):
        monkeypatch.delenv(k, raising=False)
    before = torch.get_num_threads()
    yield cli, seen
    torch.set_num_threads(before)


def test_cli_threads_option_anywhere_and_over_the_environment(fake_cli, monkeypatch):
    cli, seen = fake_cli
    start = torch.get_num_threads()
    want = 2 if start != 2 else 3
    assert cli.main(["--threads", str(want), "probe"]) == 0
    assert seen == {"threads": want, "omp": str(want), "arg": want}
    monkeypatch.setenv("WORKBENCH_THREADS", "1")
    assert cli.main(["probe", f"--threads={want}"]) == 0  # after the subcommand too; the option beats the env
    assert seen["threads"] == want
    assert cli.main(["probe"]) == 0
    assert seen == {"threads": 1, "omp": "1", "arg": 1}


def test_bad_thread_counts_are_usage_errors(fake_cli, monkeypatch, capsys):
    cli, _ = fake_cli
    assert cli.main(["probe", "--threads", "0"]) == 2
    assert "--threads: expected a positive number of threads, got '0'" in capsys.readouterr().err
    monkeypatch.setenv("WORKBENCH_THREADS", "many")
    assert cli.main(["probe"]) == 2
    assert "WORKBENCH_THREADS" in capsys.readouterr().err


def test_apply_leaves_the_count_alone_without_a_request(monkeypatch):
    monkeypatch.delenv("WORKBENCH_THREADS", raising=False)
    before = torch.get_num_threads()
    policy = apply(environ={})
    assert policy.threads is None and torch.get_num_threads() == before
    assert "torch's default threads" in policy.describe()
    assert threads.ThreadPolicy(None, {}, False, False).describe().startswith("thread policy off")


def test_notebook_helper_sets_the_kernels_threads(monkeypatch):
    from workbench.inspect.notebook import use_threads

    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # restored afterwards
    before = torch.get_num_threads()
    want = 2 if before != 2 else 3
    try:
        policy = use_threads(want)
        assert policy.threads == want and torch.get_num_threads() == want
        assert f"{want} threads" in policy.describe()
    finally:
        torch.set_num_threads(before)


def test_trainer_applies_workbench_threads(tmp_path, monkeypatch):
    from workbench.engine.trainer import train
    from workbench.inspect.notebook import small_run_config, small_shapes_data

    train_json, val_json = small_shapes_data(tmp_path / "data", train_images=2, val_images=1, image_size=64)
    cfg = small_run_config(train_json, val_json, max_iter=1, batch_size=1)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # restored afterwards
    before = torch.get_num_threads()
    want = 2 if before != 2 else 3
    monkeypatch.setenv("WORKBENCH_THREADS", str(want))
    try:
        train(cfg, tmp_path / "run", progress=False)
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
