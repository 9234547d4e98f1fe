"""experiments.runs: named random streams and the small pieces of the run skeleton."""
import torch

from experiments import runs


def test_same_name_same_stream_other_name_other_stream():
    draw = lambda seed, name: torch.randn(8, generator=runs.stream(seed, name))  # noqa: E731
    assert torch.equal(draw(0, "final-samples"), draw(0, "final-samples"))
    assert not torch.equal(draw(0, "final-samples"), draw(0, "reconstruction"))
    assert not torch.equal(draw(0, "final-samples"), draw(1, "final-samples"))


def test_stream_seeds_are_stable_and_do_not_collide_like_offsets():
    # Pinned: a stream's seed must not change between processes or versions (no Python hash()).
    assert runs.stream_seed(0, "shuffle") == runs.stream_seed(0, "shuffle") == 103023790793203567
    names = ["shuffle", "views", "snapshot-noise", "final-samples", "quality-samples", "reconstruction"]
    seeds = {runs.stream_seed(s, n) for s in range(100) for n in names}
    assert len(seeds) == 100 * len(names) and all(0 <= s < 2 ** 63 for s in seeds)


def test_snapshot_epochs_include_the_last():
    assert runs.snapshot_epochs(5, 12) == [5, 10, 12]
    assert runs.snapshot_epochs(5, 10) == [5, 10]
    assert runs.snapshot_epochs(1, 2) == [1, 2]
