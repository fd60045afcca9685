"""``--val-interval N``: validation after every Nth epoch and after the last, nothing run in between."""
import json

import pytest
from helpers import history, train_toy

import train.module
from config.train_config import SSDConfig


@pytest.mark.parametrize(("interval", "end_epoch", "validated"), [
    (1, 3, [0, 1, 2]),
    (2, 5, [1, 3, 4]),  # the last epoch although 5 is not a multiple of 2
    (3, 6, [2, 5]),
    (10, 4, [3]),
])
def test_validates_after_every_nth_epoch_and_the_last(interval, end_epoch, validated):
    config = SSDConfig(val_interval=interval, end_epoch=end_epoch)
    assert [epoch for epoch in range(end_epoch) if config.validates_after(epoch)] == validated


@pytest.mark.slow
def test_skipped_epochs_are_not_scored_and_the_best_is_among_the_validated(synthetic_rec, tmp_path, monkeypatch):
    scored = []
    score_unpadded = train.module.score_unpadded

    def recording(module, data, metrics, num_batch, reset, callback, epoch):
        scored.append(epoch)
        return score_unpadded(module, data, metrics, num_batch, reset, callback, epoch)

    monkeypatch.setattr(train.module, "score_unpadded", recording)
    prefix = str(tmp_path / "ssd")
    train_toy(synthetic_rec, prefix, 5, val_path=synthetic_rec.val_rec, val_interval=2, batch_size=8, lr=0.05,
              seed=0, keep=0)
    assert scored == [1, 3, 4]
    rows = history(prefix)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4, 5]  # every epoch has its row and checkpoint
    assert [int(row["epoch"]) for row in rows if row.get("val_mAP")] == [2, 4, 5]
    with open(prefix + "-best.json") as f:
        assert json.load(f)["epoch"] in (2, 4, 5)
