"""Many machines, one study: per-clone sampler seeds, stale trials of dead drivers (SQLite, fast),
and two clones of one git remote running one study in a real PostgreSQL server, sharing their
experiments through `dvc exp push` / `dvc exp pull` and one DVC remote (tiny params)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import run, tool_env
from test_sweep_optuna import inat_cnn, project, sweep_file  # noqa: F401 - project: the tiny committed copy (a fixture)

from inat_cnn.core.errors import UserError
from inat_cnn.sweep.pruning import trial_name
from inat_cnn.sweep.queue import experiment_refs
from inat_cnn.sweep.spec import load_sweep
from inat_cnn.sweep.driver import LOST_AFTER_S, NO_WORKER_GRACE_S, Driver, dry_run, lost, run_sweep
from inat_cnn.sweep.space import clone_id, clone_seed, distributions, make_sampler
from inat_cnn.sweep.storage import RETRY_ATTR, connect, heartbeat_settings
from inat_cnn.sweep.study import open_study

# ------------------------------------------------------------------------------- seeds


def test_each_clone_mixes_its_own_id_into_the_tpe_and_random_seeds_not_the_grids(tmp_path):
    ranged = load_sweep(sweep_file(tmp_path, "  train.lr: {low: 1.0e-5, high: 1.0e-1, log: true}\n", "r.yaml"))
    grid = load_sweep(sweep_file(tmp_path, "  train.lr: [0.1, 0.01, 0.001]\n  model.dense_units: [8, 16, 32, 64]\n", "g.yaml"))
    a, b = tmp_path / "a", tmp_path / "b"
    assert clone_seed(0, clone_id(a)) == clone_seed(0, clone_id(a)) != clone_seed(0, clone_id(b))
    assert clone_seed(0, clone_id(a)) != clone_seed(1, clone_id(a)) and clone_seed(None, clone_id(a)) is None
    for sampler in ("tpe", "random"):  # 3 draws of a continuous range: an accidental match is out of reach
        first = dry_run(ranged, study_name="s", jobs=3, sampler=sampler, seed=0, repo=a)
        assert first == dry_run(ranged, study_name="s", jobs=3, sampler=sampler, seed=0, repo=a)  # one clone: reproducible
        assert first != dry_run(ranged, study_name="s", jobs=3, sampler=sampler, seed=0, repo=b), sampler  # another: its own
    # not the grid: trial N takes the N-th configuration of the seed's order, on every machine alike,
    # so two clones' drivers sharing one study share the grid out (each one left running, as in flight)
    assert dry_run(grid, study_name="s", jobs=12, sampler="grid", seed=0, repo=a) == \
        dry_run(grid, study_name="s", jobs=12, sampler="grid", seed=0, repo=b)
    storage = optuna.storages.InMemoryStorage()
    studies = [optuna.create_study(study_name="g", storage=storage, sampler=make_sampler("grid", grid, 0, clone=clone_id(a))),
               optuna.load_study(study_name="g", storage=storage, sampler=make_sampler("grid", grid, 0, clone=clone_id(b)))]
    asked = [studies[i % 2].ask(distributions(grid)).params for i in range(12)]
    assert len({tuple(sorted(p.items())) for p in asked}) == 12


# ------------------------------------------------------------------------------- resuming


def test_a_resumed_study_keeps_the_pruner_that_judged_its_trials(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, "  train.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"))
    storage = optuna.storages.InMemoryStorage()
    sampler = make_sampler("random", sweep, 0)
    new = open_study(sweep, "st", storage, sampler=sampler, pruner=None)
    assert new.user_attrs["pruner"] == "halving" and type(new.pruner).__name__ == "SuccessiveHalvingPruner"
    assert open_study(sweep, "st", storage, sampler=sampler, pruner="hyperband").user_attrs["pruner"] == "hyperband"  # no trials yet
    new.ask(distributions(sweep))
    resumed = open_study(sweep, "st", storage, sampler=sampler, pruner=None)  # no --pruner: the study's own
    assert resumed.user_attrs["pruner"] == "hyperband" and type(resumed.pruner).__name__ == "HyperbandPruner"
    with pytest.raises(UserError, match=r"--pruner median: study st was run with the hyperband pruner.*1 trial.*--pruner hyperband"):
        open_study(sweep, "st", storage, sampler=sampler, pruner="median")
    assert open_study(sweep, "st", storage, sampler=sampler, pruner="hyperband").user_attrs["pruner"] == "hyperband"


# ------------------------------------------------------------------------------- stale trials


def test_a_running_entry_without_a_process_is_lost_after_a_grace_even_with_no_worker_left():
    """A worker that has just taken an entry may not have started its experiment (or its process file may
    say stopped, see NO_WORKER_GRACE_S): queueing it again at once would run a live trial twice."""
    assert not lost(1.0, workers=False) and not lost(NO_WORKER_GRACE_S - 0.1, workers=False)
    assert lost(NO_WORKER_GRACE_S, workers=False)
    assert not lost(LOST_AFTER_S - 0.1, workers=True) and lost(LOST_AFTER_S, workers=True)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_whose_driver_stopped_beating_is_failed_and_its_configuration_asked_again(tmp_path, capsys):
    sweep = load_sweep(sweep_file(tmp_path, "  train.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"))
    url = f"sqlite:///{tmp_path}/s.db"
    storage = connect(url, **heartbeat_settings(1))  # a beat a second, stale after 1 s (SQLite's clock: whole seconds)
    study = open_study(sweep, "st", storage, sampler=make_sampler("random", sweep, 0), pruner="none")
    mine = Driver(study, storage, sweep, tmp_path / "a", url, jobs=2)
    dead = Driver(study, storage, sweep, tmp_path / "b", url, jobs=1)
    for driver in (dead, mine):  # each asks a trial as Driver.ask does, without DVC's queue behind it
        trial = study.ask(distributions(sweep))
        storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr("dvc_repo", driver.me)
        driver.in_flight[trial.number] = trial_name("st", trial.number)
    time.sleep(2.5)  # the dead driver sends nothing more; mine beats when it reaps
    mine.reap()
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING", "WAITING"]
    assert trials[2].user_attrs[RETRY_ATTR] == 0 and "trial 0 (None, driven by" in capsys.readouterr().out
    assert mine.count() == 1  # the stale trial is replaced by its retry, which counts once it runs
    again = study.ask(distributions(sweep))
    assert again.number == 2 and again.params == trials[0].params and mine.count() == 2
    dead.tell(0, "COMPLETE", 0.5)  # a driver back after too long: its late result is not told
    assert study.trials[0].state.name == "FAIL" and "the study has it fail already" in capsys.readouterr().out
    mine.reap()  # trial 2 (asked above) has no heartbeat yet and trial 1 just beat: nothing stale
    assert [t.state.name for t in study.get_trials(deepcopy=False)] == ["FAIL", "RUNNING", "RUNNING"]
    with pytest.raises(UserError, match=r"^--stale-after 5: at least 30"):
        run_sweep(sweep, repo=tmp_path, study_name="st", storage_url=url, trials=1, jobs=1, stale_after=5)


# ------------------------------------------------------------------------------- PostgreSQL, two clones


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.skip("no /usr/lib/postgresql/*/bin/initdb (Debian: apt-get install postgresql-15; .ci/postgres does it in CI)")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("the test's PostgreSQL server runs as the postgres user: it needs root and runuser")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user (Debian's postgresql package creates it)")
    pytest.importorskip("psycopg", reason="psycopg (pip install -e '.[test]') talks to PostgreSQL")
    return found[-1].parent


@pytest.fixture(scope="module")
def postgres() -> Iterator[Callable[[str], str]]:
    """A PostgreSQL server of the system's packages, as the postgres user, on a unix socket in a
    temp folder only (no TCP): a function that creates a database and returns its URL. Stopped and
    removed afterwards."""
    bin_dir = _postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="inat-pg-"))  # not under pytest's root-only tmp: postgres must reach it
    shutil.chown(root, "postgres")
    data, as_postgres = root / "data", ["runuser", "-u", "postgres", "--"]
    run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], root)
    options = f"-c listen_addresses='' -c unix_socket_directories={root} -c fsync=off"
    run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options, "start"], root)
    def database(name: str) -> str:
        run([*as_postgres, str(bin_dir / "createdb"), "-h", str(root), name], root)
        return f"postgresql://postgres@/{name}?host={root}"

    try:
        yield database
    finally:
        run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], root, check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_machines_opening_a_new_database_at_once_all_connect(postgres):
    """Each creates Optuna's tables; all but one lose that race (a unique violation, or "relation
    already exists"), and try again."""
    url = postgres("fresh")
    with ThreadPoolExecutor(4) as pool:
        storages = list(pool.map(lambda _: connect(url, **heartbeat_settings(600)), range(4)))
    assert all(s.get_all_studies() == [] for s in storages)


@pytest.mark.e2e
def test_two_clones_run_one_study_in_postgresql_and_share_their_experiments(project, postgres, tmp_path):  # noqa: F811
    storage = postgres("optuna")
    remote, origin = tmp_path / "dvc-remote", tmp_path / "origin.git"
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    run(["git", "commit", "-qam", "the shared DVC remote"], project)
    run(["dvc", "push", "-q"], project)
    run(["git", "clone", "-q", "--bare", str(project), str(origin)], tmp_path)
    clones = {}
    for machine in ("a", "b"):  # two machines: a clone of the git remote each, data from the DVC remote
        clones[machine] = tmp_path / machine
        run(["git", "clone", "-q", str(origin), str(clones[machine])], tmp_path)
        run(["dvc", "pull", "-q", "--with-deps", "prepare"], clones[machine])  # the stages run so far
    file = sweep_file(tmp_path, "  train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n  train.epochs: [1]\n")
    args = ["inat-cnn", "sweep", "run", str(file), "--study", "mm", "--storage", storage, "--trials", "2",
            "--jobs", "1", "--pruner", "none", "--poll", "1"]  # the same command, the same --seed (0) on both
    start = time.monotonic()
    drivers = {m: subprocess.Popen(args, cwd=c, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for m, c in clones.items()}
    outs = {m: d.communicate(timeout=600)[0] for m, d in drivers.items()}
    wall = time.monotonic() - start
    assert all(d.returncode == 0 for d in drivers.values()), outs
    study = optuna.load_study(study_name="mm", storage=connect(storage))
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"], outs
    assert {t.user_attrs["dvc_repo"] for t in trials} == {clone_id(c) for c in clones.values()}, outs  # one trial each
    assert trials[0].params != trials[1].params  # same --seed, each clone its own draws
    names = {t.user_attrs["dvc_exp"] for t in trials}
    assert names == {"mm-t0", "mm-t1"}
    for machine, clone in clones.items():
        run(["dvc", "exp", "push", "origin"], clone)
        run(["dvc", "push", "-q"], clone)
    a = clones["a"]
    run(["dvc", "exp", "pull", "origin"], a)
    assert set(run(["dvc", "exp", "list", "--name-only"], a).stdout.split()) == names  # `sweep report` reads exp show
    for t in trials:  # the other machine's model came through the DVC remote
        lock = yaml.safe_load(run(["git", "show", f"{experiment_refs(a)[t.user_attrs['dvc_exp']]}:dvc.lock"], a).stdout)
        md5 = next(o["md5"] for o in lock["stages"]["train_scratch"]["outs"] if o["path"] == "models/scratch.pt")
        assert (a / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).is_file(), t.user_attrs["dvc_exp"]
    report = inat_cnn(a, "sweep", "report", "--study", "mm", "--storage", storage).stdout
    assert "study mm: 2 trial(s)" in report and "2 experiments used" in report
    assert "Trials: 2 (2 complete)" in (a / "reports/sweep.md").read_text()
    print(f"\ntwo clones, one trial each, one PostgreSQL study: {wall:.1f} s")

