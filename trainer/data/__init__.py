"""Recordings on disk, their validation, and the windowed datasets the trainer reads."""

from trainer.data.recording import RecordingError, Trial, list_trials, open_trial, write_trial
from trainer.data.schema import ACTION_NAMES, JOINT_NAMES, SCHEMA_VERSION

__all__ = [
    "ACTION_NAMES",
    "JOINT_NAMES",
    "SCHEMA_VERSION",
    "RecordingError",
    "Trial",
    "list_trials",
    "open_trial",
    "write_trial",
]
