"""experiments.harness.runs: named random streams, the small pieces of the run skeleton, and the run-time projection."""
import torch

from experiments.harness import config, loop, rng


def draw(seed: int, name: str) -> torch.Tensor:
    return torch.randn(8, generator=rng.stream(seed, name))


def test_same_name_same_stream_other_name_other_stream():
    assert torch.equal(draw(0, "final-samples"), draw(0, "final-samples"))
    assert not torch.equal(draw(0, "final-samples"), draw(0, "reconstruction"))
    assert not torch.equal(draw(0, "final-samples"), draw(1, "final-samples"))


def test_stream_seeds_are_stable_and_do_not_collide_like_offsets():
    # Pinned: a stream's seed must not change between processes or versions (no Python hash()).
    assert rng.stream_seed(0, "shuffle") == rng.stream_seed(0, "shuffle") == 103023790793203567
    names = ["shuffle", "views", "snapshot-noise", "final-samples", "quality-samples", "reconstruction"]
    seeds = {rng.stream_seed(s, n) for s in range(100) for n in names}
    assert len(seeds) == 100 * len(names) and all(0 <= s < 2 ** 63 for s in seeds)


def test_snapshot_epochs_include_the_last():
    for every, epochs, expected in ((5, 12, [5, 10, 12]), (5, 10, [5, 10]), (1, 2, [1, 2]), (5, 3, [3])):
        snapshots = loop.snapshot_epochs(every, epochs)
        assert list(snapshots) == expected and len(snapshots) == len(expected)
        assert [e for e in range(-1, epochs + 3) if e in snapshots] == expected


def test_duration_formats():
    assert [loop.duration(s) for s in (42.4, 750, 3900, 7500)] == ["42 s", "12 min 30 s", "1 h 05 min", "2 h 05 min"]


def test_projection_names_the_total_the_rest_and_the_device():
    line = loop.projection(60.0, epochs=30, done=1, device=torch.device("cpu"))
    assert "30 epochs x 60 s = 30 min 00 s" in line and "29 min 00 s of it still to go" in line and "on cpu" in line
    resumed = loop.projection(60.0, epochs=30, done=20, device=torch.device("cpu"))
    assert "10 min 00 s of it still to go" in resumed


def test_a_field_the_code_gained_since_the_run_started_does_not_block_its_resume():
    """A run saved before a config field existed resumes after a `git pull`; a changed value is still refused."""
    saved = {"epochs": 3, "z_dim": 32, "lr": 1e-4}
    now = {**saved, "epochs": 5, "gap_size": 500}     # gap_size: a field added since (it takes its current value)
    assert config.same_config(saved, now) == {}
    assert config.same_config(saved, {**now, "z_dim": 16}) == {"z_dim": (32, 16)}
    assert config.same_config({**saved, "dropped": 1}, now) == {}
