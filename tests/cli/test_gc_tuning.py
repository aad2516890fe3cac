"""The server process's garbage-collector set-up (api.runtime.tune_gc)."""

import gc

from api.runtime import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_what_exists_and_collects_less_often():
    before = gc.get_threshold()
    try:
        kept = object.__new__(type("Kept", (), {}))  # a tracked object that exists at start-up
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert gc.is_tracked(kept)
        assert not any(o is kept for o in gc.get_objects())  # frozen: no generation holds it
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
