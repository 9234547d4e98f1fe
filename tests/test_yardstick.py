"""experiments/measurements/yardstick.py: precision and recall (Kynkaanniemi et al. 2019), FID, the FLOPs count, the
table."""
import dataclasses

import pytest
import torch

from experiments.measurements import classifier, yardstick
from experiments.presentation import names
from experiments.presentation.summaries import FlowSummary, GANSummary, YardstickFields
from experiments.problems import flow, gan
from report import families


def test_precision_and_recall_of_a_set_against_itself_are_one():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert yardstick.precision_recall(x, x) == (1.0, 1.0)


def test_precision_and_recall_of_disjoint_clusters_are_near_zero():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(60, 8, generator=g), torch.randn(60, 8, generator=g) + 50
    precision, recall = yardstick.precision_recall(real, fake)
    assert precision < 0.05 and recall < 0.05


def test_half_covered_samples_give_half_precision_and_full_recall():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(80, 4, generator=g)
    fake = torch.cat([real[:40] + 1e-3, torch.randn(40, 4, generator=g) + 100])   # half on the data, half far
    precision, recall = yardstick.precision_recall(real, fake)
    assert precision == pytest.approx(0.5)
    assert recall > 0.45


def test_knn_radius_excludes_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    assert yardstick.knn_radii(x, k=1).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="more than k"):
        yardstick.knn_radii(x[:3], k=3)


def test_measure_of_identical_sets_gives_zero_fid_and_full_precision_recall():
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    digits = classifier.seeded(classifier.DigitClassifier, 0, torch.device("cpu")).eval()
    calls = []
    fields = yardstick.measure(images, images.clone(), digits, sample64=lambda: calls.append(1),
                               models=[digits], flops_per_image=1.0, device="cpu")
    assert fields["fid"] == pytest.approx(0.0, abs=1e-6)
    assert fields["precision"] == fields["recall"] == 1.0
    assert fields["yardstick_size"] == 24 and fields["yardstick_k"] == yardstick.K
    assert fields["parameters"] == sum(p.numel() for p in digits.parameters())
    assert len(calls) == 2 and fields["sample_seconds_64"] >= 0       # one warm-up draw, one timed
    assert set(fields) == {f.name for f in dataclasses.fields(YardstickFields)}   # what every summary can hold


@pytest.mark.parametrize("family, module", [("flow", flow), ("gan", gan)])
def test_training_flops_scale_with_the_batch(family, module):
    cfg = module.config_for("smoke")
    per_image = yardstick.training_flops_per_image(family, cfg, batch=2)
    assert per_image > 0
    assert yardstick.training_flops_per_image(family, cfg, batch=4) == pytest.approx(per_image)


def test_the_table_says_the_gan_has_no_likelihood():
    flow_summary = FlowSummary.partial(bits_per_dim=3.5, fid=2.0, precision=0.5, recall=0.4)
    gan_summary = GANSummary.partial(fid=1.0, precision=0.7, recall=0.2)
    rows = families.table_rows({"gan": gan_summary, "flow": flow_summary, "vae": None})
    assert [r.family for r in rows] == ["flow", "gan"]                  # FAMILIES order, absent ones skipped
    assert families.format_bits(rows[0]) == "3.50 (exact)"
    assert rows[1].bits_per_dim is None
    assert families.format_bits(rows[1]) == families.NO_LIKELIHOOD == "none: no likelihood"
    assert rows[1].jsd is None and rows[1].sharpness_ratio is None       # not measured: None, not an error
    text = families.table(rows, {f: f"python -m experiments {f}" for f in names.FAMILIES})
    gan_line = next(line for line in text.splitlines() if line.startswith("GAN"))
    assert "none: no likelihood" in gan_line and "n/a" in gan_line
    assert "missing run" in next(line for line in text.splitlines() if line.startswith("VAE"))


def rows_with(flow_fid: float, fid_size: int = 100) -> list:
    def r(family, bpd, fid, precision, recall, size=100):
        return families.Row(family=family, bits_per_dim=bpd, bits_per_dim_method="m", fid=fid, precision=precision,
                            recall=recall, sharpness_ratio=1.0, clear_digit_share=0.5, jsd=0.1,
                            sample_seconds_64=1.0, parameters=10, train_flops_per_image=1e9, fid_size=size,
                            classifier_accuracy=0.9)
    return [r("flow", 3.0, flow_fid, 0.3, 0.7, fid_size), r("vae", 4.0, 6.0, 0.5, 0.5), r("ddpm", 3.9, 5.0, 0.6, 0.6),
            r("gan", None, 4.0, 0.8, 0.2)]


def test_the_best_bits_but_worst_fid_sentence_appears_only_when_the_numbers_say_so():
    rows = rows_with(flow_fid=10.0)
    assert "the best bits/dim but the worst classifier-FID" in families.paragraph(rows[0], rows)
    rows = rows_with(flow_fid=3.0)                       # now the best FID as well
    text = families.paragraph(rows[0], rows)
    assert "worst" not in text and "is the lowest classifier-FID" in text
    rows = rows_with(flow_fid=10.0, fid_size=50)         # FIDs on different set sizes are not ranked
    text = families.paragraph(rows[0], rows)
    assert "worst" not in text and "not ranked" in text


def test_precision_recall_sentences_follow_the_divergence():
    rows = rows_with(flow_fid=10.0)
    flow_text = families.paragraph(rows[0], rows)
    assert "recall above precision" in flow_text and "mode-covering" in flow_text and "this run agrees" in flow_text
    gan = families.paragraph(rows[3], rows)
    assert "precision above recall" in gan and "this run agrees" in gan and "no bits/dim" in gan
    flipped = families.Row(**{**rows[3].__dict__, "precision": 0.1, "recall": 0.9})
    assert "this run does not" in families.paragraph(flipped, rows)


def test_vae_and_ddpm_summaries_written_before_the_yardstick_still_read():
    from experiments.presentation.summaries import DDPMSummary, VAESummary
    for schema in (VAESummary, DDPMSummary):
        old = {k: v for k, v in schema.partial().to_dict().items()
               if k not in {f.name for f in dataclasses.fields(YardstickFields)}}
        summary = schema.from_dict(old)
        assert summary.fid is None and summary.precision is None and summary.train_flops_per_image is None
    with pytest.raises(ValueError, match="missing key 'fid'"):      # the flow and the GAN always write them
        FlowSummary.from_dict({k: v for k, v in FlowSummary.partial().to_dict().items() if k != "fid"})
