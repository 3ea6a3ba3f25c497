"""`make demo`: the whole job end to end on an embedded default, as a user would run it.

1. simulate a small multi-animal dataset (the `tiny` preset's 64 x 64 frames, 8 animals x 3 trials);
2. train the encoder (the default method, the bench model) on every animal but one, which is held out;
3. export the checkpoint to a model bundle, calibrated for the held-out animal from its other
   trials (field-of-view alignment, pixel baseline, per-animal normalisation; no labels);
4. start the real decoder daemon as its own process, over TCP loopback;
5. replay the held-out animal's first trial into it at the recorded frame rate;
6. print decoded-action accuracy and the latency table, then stop the daemon with SIGTERM
   and check that its decision log holds every action the replay received.

Each step is the same `actionloop` command a person would type; the commands are printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("DEMO_OUT", "demo-out"))
SEED = 0
# The `tiny` simulation preset (64 x 64 frames) grown to what the method needs to show itself:
# with 4 animals x 2 trials x 20 s and the `tiny` training config the held-out animal decoded at
# 37 %; 8 animals x 3 trials x 30 s and the bench model at half its batch reached 67.7 %, and
# 71.2 % with cross-animal positives, in 100 s on 2 cores (the replay itself takes 30 s).
SIMULATE = ("--preset", "tiny", "--animals", "8", "--trials", "3", "--seconds", "30")
TRAIN = ("--config", "bench", "--set", "optim.batch_size=128")


def _step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def _actionloop(*args: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "tools.cli", "--log-format", "console", *args]
    print("$ actionloop " + " ".join(args), flush=True)
    subprocess.run(command, check=True, env=env)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _held_out_trials(data_dir: Path) -> tuple[str, Path, list[Path]]:
    """The held-out animal, the trial to replay, and its other trials (for calibration)."""
    from trainer.data.recording import list_trials, open_trial

    trials = []
    for path in list_trials(data_dir):
        trial = open_trial(path)
        trials.append((trial.animal_id, trial.trial_id, path))
        trial.close()
    animal = sorted({animal for animal, _, _ in trials})[-1]
    own = [path for _, path in sorted((trial_id, path) for a, trial_id, path in trials if a == animal)]
    return animal, own[0], own[1:] or own[:1]


def _wait_until_ready(control_endpoint: str, daemon: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    from protocols.client import ControlClient

    deadline = time.monotonic() + timeout_s
    with ControlClient(control_endpoint) as client:
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited during start-up with code {daemon.returncode}")
            try:
                client.request("ping", timeout=1.0)
                return
            except TimeoutError:
                continue
    raise SystemExit(f"the daemon did not answer a ping within {timeout_s} s")


def _logged_action_seqs(path: Path) -> set[int]:
    """Sequence numbers of every action (decoded or 'filling') in the daemon's decision log."""
    from decoder.decision_log import read_records
    from protocols.codec import decode
    from protocols.messages import Action

    messages = (decode(parts) for parts in read_records(path))
    return {m.seq for m in messages if isinstance(m, Action)}


def main() -> int:
    started = time.perf_counter()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    data, run_dir, bundle = OUT / "data", OUT / "run", OUT / "bundle"

    _step("1/6 simulate a small multi-animal dataset")
    _actionloop("simulate", *SIMULATE, "--seed", str(SEED), "--out", str(data))
    held_out_animal, replay_trial, calibration_trials = _held_out_trials(data)
    print(f"held-out animal: {held_out_animal} (its labels are never used for training)")

    _step("2/6 train the encoder (pose-guided contrastive, per-animal normalisation, cross-animal positives)")
    _actionloop(
        "train", *TRAIN, "--data", str(data), "--out", str(run_dir),
        "--set", f'data.exclude_animals=["{held_out_animal}"]',
    )

    _step("3/6 export the model bundle, calibrated for the held-out animal (no labels used)")
    _actionloop("export", "--checkpoint", str(run_dir / "checkpoint.pt"), "--out", str(bundle),
                "--calibrate", *(str(p) for p in calibration_trials))

    _step("4/6 start the decoder daemon (its own process, TCP loopback)")
    frames, actions, control = (f"tcp://127.0.0.1:{_free_port()}" for _ in range(3))
    decisions = OUT / "decisions.msgpack"
    env = {
        **os.environ,
        "ACTIONLOOP_MODEL__BUNDLE": str(bundle),
        "ACTIONLOOP_BACKEND__NAME": "onnxruntime",
        "ACTIONLOOP_SOCKETS__FRAMES": frames,
        "ACTIONLOOP_SOCKETS__FRAMES_MODE": "connect",
        "ACTIONLOOP_SOCKETS__ACTIONS": actions,
        "ACTIONLOOP_SOCKETS__CONTROL": control,
        "ACTIONLOOP_DECISION_LOG__PATH": str(decisions),
        "ACTIONLOOP_LOGGING__FORMAT": "console",
    }
    print("$ python -m decoder   # settings from ACTIONLOOP_* variables", flush=True)
    daemon = subprocess.Popen([sys.executable, "-m", "decoder"], env=env)
    try:
        _wait_until_ready(control, daemon)
        print(f"daemon ready: frames <- {frames}, actions -> {actions}, control {control}")

        _step(f"5/6 replay held-out trial {replay_trial.name} at the recorded frame rate")
        _actionloop(
            "replay", "--data", str(replay_trial), "--frames-endpoint", frames,
            "--actions-endpoint", actions, "--rate", "recorded", "--out", str(OUT / "replay"),
        )
    finally:
        _step("6/6 stop the daemon with SIGTERM")
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        print(f"daemon exited with code {code}")

    report = json.loads((OUT / "replay" / "report.json").read_text())
    logged = _logged_action_seqs(decisions)
    print("\n=== result")
    accuracy = report.get("accuracy")
    print(f"decoded-action accuracy on the held-out animal: "
          f"{'n/a' if accuracy is None else f'{100 * accuracy:.1f} %'}"
          f" (chance {100 / len(report.get('class_names', [0] * 7)):.1f} %)")
    frames_summary = report.get("frames", {})
    print(f"frames: {frames_summary}")
    decoded = frames_summary.get("decoded", 0)
    print(f"decision log: {len(logged)} actions logged, {decoded} received by the replay"
          f" ({'none lost' if len(logged) >= decoded else 'SOME MISSING'})")
    print(f"figures: {OUT / 'data' / 'overview.png'}, {OUT / 'replay' / 'latency.png'}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
