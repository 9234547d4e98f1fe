"""experiments.presentation.summaries: the schema of summary.json round-trips, and reading names the file and key it
rejects."""
from __future__ import annotations

import json

import pytest

from experiments.presentation import summaries
from experiments.presentation.summaries import (
    DDPMSummary,
    LevelAccuracy,
    ProbeResult,
    SimSiamSummary,
    SummaryError,
    VAESummary,
)


def test_round_trip_with_the_nested_probe(tmp_path):
    probe = ProbeResult(raw_pixels=0.2, levels=[LevelAccuracy(t=5, accuracy=0.6), LevelAccuracy(t=50, accuracy=0.4)],
                        feature_dim=8, n_train=64, n_test=32)
    written = DDPMSummary.partial(epochs=2, timesteps=50, probe=probe, alpha_bar=[0.9, 0.8])
    written.write(tmp_path)
    read = summaries.read(tmp_path)
    assert read == written and isinstance(read.probe.levels[0], LevelAccuracy)
    assert json.loads((tmp_path / summaries.FILE).read_text())["probe"]["levels"][1] == {"t": 50, "accuracy": 0.4}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("ll_K"), "missing key 'll_K'"),
    (lambda d: d.update(bottleneck_t5=0.5), "unknown key 'bottleneck_t5'"),
])
def test_a_missing_or_unknown_key_names_the_file_and_the_key(tmp_path, change, message):
    d = VAESummary.partial(epochs=1).to_dict()
    change(d)
    (tmp_path / summaries.FILE).write_text(json.dumps(d))
    with pytest.raises(SummaryError, match=f"{tmp_path / summaries.FILE}: {message}"):
        VAESummary.read(tmp_path)


def test_an_old_probe_with_numbers_in_its_keys_is_rejected(tmp_path):
    d = DDPMSummary.partial().to_dict() | {"probe": {"bottleneck_t5": 0.5, "raw_pixels": 0.2}}
    (tmp_path / summaries.FILE).write_text(json.dumps(d))
    with pytest.raises(SummaryError, match="probe: unknown key 'bottleneck_t5'"):
        summaries.read(tmp_path)


def test_a_summary_without_the_schedule_reads_with_none(tmp_path):
    d = DDPMSummary.partial().to_dict()
    del d["alpha_bar"]
    (tmp_path / summaries.FILE).write_text(json.dumps(d))
    assert DDPMSummary.read(tmp_path).alpha_bar is None


def test_another_problems_summary_is_refused(tmp_path):
    SimSiamSummary.partial().write(tmp_path)
    with pytest.raises(SummaryError, match="key 'problem' is 'simsiam', expected 'ddpm'"):
        DDPMSummary.read(tmp_path)


@pytest.mark.parametrize("schema, field", [(VAESummary, "discriminator"), (DDPMSummary, "discriminator"),
                                           (SimSiamSummary, "spectrum")])
def test_a_summary_from_before_part_iii_reads_with_none(tmp_path, schema, field):
    d = schema.partial().to_dict()
    del d[field]
    (tmp_path / summaries.FILE).write_text(json.dumps(d))
    assert getattr(schema.read(tmp_path), field) is None


def test_round_trip_with_the_nested_spectrum_without_a_predictor(tmp_path):
    spectrum = summaries.SpectrumResult(epoch=3, eigenvalues=[1.0, 0.1], largest=4.0, trace=5.0, effective_rank=1.5,
                                        alignment=None, predictor_map="none", d=2, n=8, seconds=0.1)
    written = SimSiamSummary.partial(epochs=3, spectrum=spectrum)
    written.write(tmp_path)
    assert summaries.read(tmp_path) == written and summaries.read(tmp_path).spectrum.alignment is None


def test_part_iii_fields_written_before_the_corrected_measurements_read_with_their_defaults():
    """An alignment measured against 1/d, gaps whose log p(x) came from q_phi, DRS without the gamma option."""
    old_alignment = {"diagonal_fraction": 0.7, "chance": 1 / 256, "cosines": [0.9], "diagonal": [1.0]}
    al = summaries.Alignment.from_dict(old_alignment)
    assert al.chance_spread is None and al.excess is None and al.rotations is None
    estimate = {"nats": -3000.0, "mc_se": 1.0, "image_se": 10.0}
    gaps = {"n_images": 4, "dims": 3072, "ll_K": 100, "amortised_elbo": estimate, "per_point_elbo": estimate,
            "log_likelihood": estimate, "amortisation_gap": estimate, "approximation_gap": estimate,
            "negative_images": 0, "per_point_steps": 20, "stopping_rule": "Adam", "seconds_amortised": 0.1,
            "seconds_per_point": 1.0, "seconds": 2.0}
    g = summaries.AmortisationGaps.from_dict(gaps)
    assert g.ll_proposal == "encoder" and g.graded_log_likelihood is None
    interval = {"estimate": 0.1, "low": 0.0, "high": 0.2, "level": 0.95}
    drs = {"jsd": interval, "accepted_fraction": 0.5, "n_accepted": 16, "fid_samples": 1.0, "fid_accepted": 1.0,
           "fid_subset": 1.0, "jsd_accepted": interval, "jsd_subset": interval, "n_real_train": 32,
           "n_fake_train": 32, "n_real_test": 32, "n_fake_test": 32, "epochs": 2, "seconds": 1.0}
    assert summaries.DiscriminatorResult.from_dict(drs).gamma_quantile is None
