import math

import pytest
from pydantic import ValidationError

from sslhub.early_stopping import EarlyStopping, EarlyStoppingSpec


def test_stops_after_patience_validations_without_improvement():
    tracker = EarlyStopping(EarlyStoppingSpec(monitor="loss", patience=2, min_delta=0.1))
    assert tracker.update(1.0, step=10)
    assert not tracker.update(0.95, step=20)  # within min_delta: not an improvement
    assert not tracker.should_stop
    assert not tracker.update(0.99, step=30)
    assert tracker.should_stop
    assert tracker.stopped.best_step == 10 and tracker.stopped.step == 30
    assert "loss" in tracker.stopped.reason


def test_accuracy_is_maximised_and_nan_never_improves():
    tracker = EarlyStopping(EarlyStoppingSpec(monitor="val_accuracy", patience=3))
    assert tracker.mode == "max"
    assert tracker.update(0.5, step=1)
    assert tracker.update(0.6, step=2)
    assert not tracker.update(math.nan, step=3)
    assert tracker.best_value == 0.6 and tracker.bad_validations == 1


def test_state_round_trip_continues_identically():
    spec = EarlyStoppingSpec(patience=2)
    first = EarlyStopping(spec)
    first.update(1.0, 1)
    first.update(1.5, 2)
    second = EarlyStopping(spec)
    second.load_state_dict(first.state_dict())
    for tracker in (first, second):
        tracker.update(2.0, 3)
    assert first.state_dict() == second.state_dict()
    assert second.should_stop


def test_spec_rejects_unknown_keys_and_bad_patience():
    with pytest.raises(ValidationError):
        EarlyStoppingSpec(patience=0)
    with pytest.raises(ValidationError):
        EarlyStoppingSpec(patient=3)
