"""kill -9 of `hebbedge train` at random moments, a few seconds of it (tests/torture_train.py is the
longer run as a command)."""

from torture_train import torture


def test_train_survives_kill_9_at_random_moments(tmp_path):
    seen = torture(tmp_path, seconds=4, seed=0)
    assert seen["trials"] >= 1 and seen["kills"] >= 1, seen
