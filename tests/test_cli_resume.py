"""`keras-cskd distill` killed, interrupted and run again (subprocesses):
every rerun resumes, an interrupted run is never deleted without
--overwrite. Once, not per backend: the writes the kills cut are the same
code on every backend (test_kill.py kills them too, and test_interruption.py
resumes after a SIGKILL on every backend).
"""

import json
import random
import signal
import sys
import time
from pathlib import Path

import keras
import pytest
from cli_helpers import main_in_process, mlp, once, run_cli, save_model, start_cli

# Rows of the "Faults" table of docs/reliability.md (rendered by
# test_faults.py); what they state is what the tests below assert.
FAULT_ROWS = [
    (
        "`keras-cskd distill` killed with SIGKILL at 5 random moments in a row (teacher "
        "training and its cache, students and their checkpoints, the run record), the same "
        "command run again each time",
        "Every rerun prints `resuming the interrupted run in out (finished: ...)` and "
        "continues from the last finished epoch, 5 of 5; the last one finishes the run.",
        "The teacher cache, the students and the results; the per-epoch backups are removed "
        "once the run has finished.",
    ),
    (
        "Ctrl-C before a student's first epoch ended",
        "Exit 130 and `interrupted during ce (seed 0): no epoch of it had finished, so there "
        "is no checkpoint of it yet; run the same command again (or add --resume) to continue "
        "from there`",
        "The run record; the rerun resumes it.",
    ),
    (
        "Ctrl-C between two trainings (scoring the teacher, building the next student)",
        "Exit 130 and `interrupted between two trainings: every finished one is kept in out "
        "(finished: ...); run the same command again (or add --resume) to continue from there`",
        "The run record and every finished student; the rerun resumes it.",
    ),
    (
        "A rerun with other options while `--out` holds an interrupted run",
        "Exit 2, one line: `keras-cskd: error: out holds an interrupted run with other settings "
        "(...): rerun with its options to resume it, add --overwrite to discard it, or choose "
        "another --out`",
        "The interrupted run, untouched (`--overwrite` discards it).",
    ),
    (
        "A command refused for bad input (here `--teacher` naming a missing file), then "
        "run again corrected",
        "Exit 2 and one line; the corrected command runs: the checks come before the run "
        "record is written, so the refused command leaves nothing in `--out` that would "
        "refuse the corrected one as an interrupted run with other settings.",
        "Nothing was written.",
    ),
    (
        "A `run.json` that is not a run record",
        "Exit 2, one line: `keras-cskd: error: out/run.json cannot be read (JSONDecodeError): "
        "it is not a keras-cskd run record; rerun with --overwrite to start over`",
        "Untouched.",
    ),
    (
        "A teacher cache (`out/teacher.keras`) cut short",
        "Retrained, and said: `training teacher (out/teacher.keras does not match the checksum "
        "in out/teacher.json: it was cut short or replaced)`",
        "A new, complete teacher cache.",
    ),
]

_RESUME_ARGS = [
    "distill",
    "--method",
    "kd",
    "--seeds",
    "1",
    "--limit",
    "300",
    "--teacher-epochs",
    "3",
    "--quiet",
    "--out",
    "out",
]
CLI_KILLS = 5


@once
@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_resumes(tmp_path):
    """The command killed with SIGKILL CLI_KILLS times in a row, each time at
    a random moment after one of the lines it prints as it goes (teacher
    training and its cache, the CE student, the KD student: their backups,
    checkpoints and the run record being written); each rerun of the same
    command resumes, and the last one finishes the run. Once, not per
    backend: the writes that the kills cut (`_files.write_atomically`, the
    checkpoint callbacks) are killed on every backend in test_kill.py."""
    rng = random.Random(0)
    args = [a for a in _RESUME_ARGS if a != "--quiet"] + ["--epochs", "30"]
    record = tmp_path / "out" / "run.json"
    # Kill k happens at a random moment after this output of its process.
    after = ["training teacher", "teacher:", "CE only (", "KD (", "KD ("]
    resumed, phases = 0, []
    for kill in range(CLI_KILLS):
        process = start_cli(args, tmp_path)
        lines = []
        while not lines or after[kill] not in lines[-1]:
            lines.append(process.stdout.readline())
            assert lines[-1], ("".join(lines), process.communicate(timeout=60)[1][-3000:])
        time.sleep(rng.uniform(0.0, 2.0))
        process.send_signal(signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=60)
        stdout = "".join(lines) + stdout
        assert process.returncode == -signal.SIGKILL, (process.returncode, stderr[-2000:])
        if kill:
            assert "resuming the interrupted run in out" in stdout, (stdout, stderr[-2000:])
            resumed += 1
        phases.append(sorted(json.loads(record.read_text())["done"]))
    final = run_cli(args, cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming the interrupted run in out" in final.stdout
    resumed += 1
    assert resumed == CLI_KILLS
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["method"] for row in summary["results"]] == ["ce", "kd"]
    assert json.loads(record.read_text())["finished"] is True
    assert not (tmp_path / "out" / "backup").exists()
    for name in ("teacher.keras", "student_kd.keras", "student.keras"):
        keras.saving.load_model(tmp_path / "out" / name)
    print(f"\nCLI: {CLI_KILLS} kills, {resumed} resumed; finished students at each kill: {phases}")


@once
@pytest.mark.slow
def test_an_interrupted_run_is_resumed_or_kept(tmp_path, monkeypatch, capsys):
    """A run record left by an interrupted run: the same options resume it,
    other options are refused (exit 2, one line) rather than deleting it,
    --overwrite discards it, --resume with nothing to resume is refused. In
    this process: the logic is the command line's own (kills and Ctrl-C of
    the real command are the other tests here)."""
    out = tmp_path / "out"
    out.mkdir()
    backup = out / "backup" / "kd-seed0"
    backup.mkdir(parents=True)
    (backup / "latest.weights.h5").write_bytes(b"a backup")
    record = out / "run.json"
    record.write_text(
        json.dumps(
            {"settings": {"epochs": 7}, "settings_sha256": "0", "done": {}, "finished": False}
        )
    )

    def run(*extra):
        return main_in_process(
            [*_RESUME_ARGS, "--epochs", "1", *extra], tmp_path, monkeypatch, capsys
        )

    code, _, err = run()
    assert code == 2, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("keras-cskd:")]
    assert len(errors) == 1 and "holds an interrupted run with other settings" in errors[0]
    assert "--overwrite" in errors[0] and "Traceback" not in err
    assert (backup / "latest.weights.h5").read_bytes() == b"a backup"  # kept

    code, _, err = run("--resume")
    assert code == 2 and "--resume: no interrupted run" in err

    code, _, err = run("--overwrite")
    assert code == 0, err[-2000:]
    assert json.loads(record.read_text())["finished"] is True
    assert not (out / "backup").exists()

    code, _, err = run("--resume")
    assert code == 2 and "(it finished)" in err

    record.write_text("{not json")
    code, _, err = run()
    assert code == 2 and f"{Path('out') / 'run.json'} cannot be read" in err

    # A teacher cache cut short (a kill while it was copied): retrained, said so.
    teacher = out / "teacher.keras"
    record.unlink()
    teacher.write_bytes(teacher.read_bytes()[:1000])
    code, stdout, err = run()
    assert code == 0, err[-2000:]
    assert "does not match the checksum in" in stdout and "cut short" in stdout
    keras.saving.load_model(teacher)


def _ctrl_c(*_args, **_kwargs):
    raise KeyboardInterrupt


@once
def test_ctrl_c_before_the_first_epoch_says_so_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    """Ctrl-C inside the first student's first epoch (the console script's
    handler raises KeyboardInterrupt there; test_cli_runs.py sends a real
    SIGINT)."""
    from keras_cskd.cli import run

    teacher = save_model(mlp((8, 8, 1), 10), tmp_path / "teacher.keras")
    args = [*_RESUME_ARGS, "--teacher", teacher, "--epochs", "2"]
    with monkeypatch.context() as patch:
        patch.setattr(run, "_guarded_fit", _ctrl_c)
        code, _, err = main_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 130
    assert (
        "interrupted during ce (seed 0): no epoch of it had finished, so there is no "
        "checkpoint of it yet; run the same command again (or add --resume) to continue"
    ) in err
    assert not (tmp_path / "out" / "checkpoint_ce.keras").exists()
    code, out, err = main_in_process([*args, "--resume"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert "resuming the interrupted run in out (finished: no student yet)" in out


@once
def test_ctrl_c_between_two_trainings_says_what_is_kept(tmp_path, monkeypatch, capsys):
    from keras_cskd.cli import run

    teacher = save_model(mlp((8, 8, 1), 10), tmp_path / "teacher.keras")
    monkeypatch.setattr(run, "_seed_runs", _ctrl_c)  # after the teacher, before any student
    code, _, err = main_in_process(
        [*_RESUME_ARGS, "--teacher", teacher, "--epochs", "1"], tmp_path, monkeypatch, capsys
    )
    assert code == 130
    assert (
        f"interrupted between two trainings: every finished one is kept in {Path('out')} "
        "(finished: no student yet); run the same command again (or add --resume) to continue"
    ) in err
    assert json.loads((tmp_path / "out" / "run.json").read_text())["finished"] is False


@once
def test_a_ctrl_c_inside_a_gc_callback_prints_no_traceback(monkeypatch, capsys):
    """The console script's hook for exceptions Python must ignore: a Ctrl-C
    in a garbage-collection callback (JAX's) is not reported, since the run
    stops at its next batch anyway; anything else still is."""
    import gc

    from keras_cskd import cli

    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    assert cli.console_main() == 0
    assert sys.unraisablehook is cli._unraisable_hook

    for error in (KeyboardInterrupt(), ValueError("a real problem")):

        def callback(phase, info, error=error):
            if phase == "start":
                raise error

        gc.callbacks.append(callback)
        try:
            gc.collect()
        finally:
            gc.callbacks.remove(callback)
    err = capsys.readouterr().err
    assert "KeyboardInterrupt" not in err
    assert "ValueError: a real problem" in err


@once
def test_a_refused_command_leaves_nothing_that_blocks_the_corrected_one(
    tmp_path, monkeypatch, capsys
):
    args = [*_RESUME_ARGS, "--epochs", "1", "--teacher-epochs", "1"]
    code, _, err = main_in_process(
        [*args, "--teacher", "missing.keras"], tmp_path, monkeypatch, capsys
    )
    assert code == 2 and "--teacher missing.keras: no such file" in err
    assert not (tmp_path / "out" / "run.json").exists()
    code, out, err = main_in_process(args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-2000:]
    assert "resuming" not in out
    assert json.loads((tmp_path / "out" / "run.json").read_text())["finished"] is True
