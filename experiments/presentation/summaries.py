"""The final numbers of a run, its summary.json: one schema per problem, the one place a summary key is spelled.

A driver (experiments.problems.vae, .ddpm, .simsiam) builds its problem's dataclass with keyword arguments and
writes it last (its presence means the run is done); figures and the report read it back with `read`
and use attributes. Reading validates: a missing or unknown key is an error naming the file and the key.
Fields with a default may be absent from a file (summaries written before the field existed).
Standard library only: the report imports it without torch.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

FILE = "summary.json"


class SummaryError(ValueError):
    """A summary.json that does not match its schema."""


class Schema:
    """from_dict / to_dict / read / write for the dataclasses below. NESTED: field -> parser of its JSON value."""

    NESTED: ClassVar[dict[str, Callable[[Any, str], Any]]] = {}

    @classmethod
    def from_dict(cls, d: dict, where: str = FILE):
        """Validate the keys of `d` (read from `where`, named in errors) and build the dataclass."""
        if not isinstance(d, dict):
            raise SummaryError(f"{where}: expected a JSON object for {cls.__name__}, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        required = [n for n, f in known.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        for key in d:
            if key not in known:
                raise SummaryError(f"{where}: unknown key {key!r} for {cls.__name__} (fields: {', '.join(known)})")
        for key in required:
            if key not in d:
                raise SummaryError(f"{where}: missing key {key!r} of {cls.__name__}; it was written by an older "
                                   "version: delete it and rerun the run's command to redo the final evaluation")
        return cls(**{k: cls.NESTED[k](v, f"{where}: {k}") if k in cls.NESTED and v is not None else v
                      for k, v in d.items()})

    @classmethod
    def partial(cls, **known: Any):
        """Every field None but those given: what an unfinished run's metrics tell (the report's fallback)."""
        unknown = {f.name: None for f in fields(cls) if f.default is dataclasses.MISSING and f.name not in known}
        return cls(**unknown, **known)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write(self, run_dir: str | Path) -> Path:
        """Write run_dir/summary.json atomically: a temporary file, synced, renamed over it."""
        path = Path(run_dir) / FILE
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w") as f:
            f.write(self.to_json())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, run_dir: str | Path):
        """run_dir/summary.json as this schema; SummaryError when it is another problem's or does not match."""
        path = Path(run_dir) / FILE
        d = load(path)
        problem = d.get("problem") if isinstance(d, dict) else None
        expected = next(f.default for f in fields(cls) if f.name == "problem")
        if problem != expected:
            raise SummaryError(f"{path}: key 'problem' is {problem!r}, expected {expected!r} for {cls.__name__}")
        return cls.from_dict(d, str(path))


# --------------------------------------------------------------------------- the yardstick
# (experiments.measurements.yardstick)

@dataclass(kw_only=True)
class YardstickFields:
    """The measures every generative family's summary carries (flow, VAE, DDPM, GAN), on its final samples
    against as many test images, in the run's digit classifier's feature space. Optional (None: not measured,
    e.g. a summary written before these existed); FlowSummary and GANSummary require fid, precision and recall."""
    fid: float | None = None                     # classifier-FID, final samples vs as many test images
    precision: float | None = None               # Kynkaanniemi et al. 2019, k = yardstick_k: samples on the data
    recall: float | None = None                  # test images on the samples' manifold
    yardstick_k: int | None = None               # neighbours defining each point's ball
    yardstick_size: int | None = None            # images per set in those three measures
    sample_seconds_64: float | None = None       # wall time to draw 64 images (the family's sampler, one batch)
    parameters: int | None = None                # trainable parameters of what is trained (the GAN: G and D)
    train_flops_per_image: float | None = None   # FLOPs of one training step per image (matmuls and convolutions)


# --------------------------------------------------------------------------- Problem 1

@dataclass(kw_only=True)
class VAESummary(YardstickFields, Schema):
    problem: str = "vae"
    epochs: int                       # epochs trained
    dataset: str                      # data source: "svhn" or "synthetic"
    test_log_likelihood_nats: float   # mean K-sample importance-weighted log p(x) over test images, nats
    test_bits_per_dim: float          # -log p(x) / (D ln 2), pixels in [-1, 1] (the model's scale), bits
    test_bits_per_dim_8bit: float     # the same on the 8-bit scale [0, 256) of the literature, bits
    ll_K: int                         # importance samples per image
    ll_n_images: int                  # test images in the log-likelihood
    final_train_loss: float           # last epoch's mean training loss (negative ELBO), nats per image
    final_test_loss: float            # last epoch's test loss (negative ELBO), nats per image
    train_wall_seconds: float         # seconds in training steps, all epochs
    wall_seconds: float               # seconds from the start to the last epoch's end, evaluation included
    classifier_test_accuracy: float | None = None  # the run's digit classifier (reads the samples), test accuracy
    # The test ELBO, 8-bit scale, with the decoder's unit variance replaced by a per-pixel variance fitted on
    # training images (encoder and decoder mean as trained; experiments.measurements.decoder_variance): an upper bound
    # on
    # that decoder's bits per dimension.
    test_elbo_bits_per_dim_8bit_fitted_variance: float | None = None
    observations: Observations | None = None  # 1.3(b-d, f): what the samples, reconstructions, interpolations look like
    amortisation: AmortisationGaps | None = None   # Q1.3-1.4 measured: amortisation and approximation gaps

    discriminator: DiscriminatorResult | None = None  # Q3 on the samples: JSD and rejection sampling
    evaluation_seconds: dict[str, float] | None = None  # each final evaluation's seconds, by name

    NESTED: ClassVar = {"observations": lambda v, where: Observations.from_dict(v, where),
                        "amortisation": lambda v, where: AmortisationGaps.from_dict(v, where),
                        "discriminator": lambda v, where: DiscriminatorResult.from_dict(v, where)}


# --------------------------------------------------------------------------- Problem 2

@dataclass(kw_only=True)
class LevelAccuracy(Schema):
    t: int                            # noise step the probe's inputs were noised to (1..T)
    accuracy: float                   # test accuracy of the linear probe, fraction in [0, 1]


@dataclass(kw_only=True)
class ProbeResult(Schema):
    raw_pixels: float                 # test accuracy of the probe on raw pixels, fraction in [0, 1]
    levels: list[LevelAccuracy]       # the probe on the U-Net bottleneck, one entry per noise step, t ascending
    feature_dim: int                  # width of the bottleneck features
    n_train: int                      # images the probe was fit on
    n_test: int                       # images it was tested on

    NESTED: ClassVar = {"levels": lambda v, where: [LevelAccuracy.from_dict(x, f"{where}[{i}]")
                                                    for i, x in enumerate(v)]}


@dataclass(kw_only=True)
class DDPMSummary(YardstickFields, Schema):
    problem: str = "ddpm"
    epochs: int                       # epochs trained
    timesteps: int                    # T, steps of the forward process
    beta_schedule: str                # name in experiments.problems.diffusion.SCHEDULES
    dataset: str                      # data source: "svhn" or "synthetic"
    final_train_loss: float           # last epoch's mean training loss (smooth L1 on eps)
    final_test_loss_ema: float        # last epoch's test loss of the EMA weights (smooth L1 on eps)
    train_seconds_per_epoch: float    # median seconds of training steps per epoch
    train_images_per_s: float         # median training throughput, images per second
    train_wall_seconds: float         # seconds in training steps, all epochs
    wall_seconds: float               # seconds from the start to the last epoch's end, evaluation included
    sample_seconds: float             # seconds of the pass that drew the final and quality samples (ancestral, EMA)
    sample_seconds_per_image: float   # the same per image
    n_final_samples: int              # final samples drawn
    classifier_test_accuracy: float   # the digit classifier's test accuracy, fraction
    recon_levels: list[int]           # noise steps t' of the reconstruction study, ascending
    recon_mse: list[float]            # per level: MSE of the reconstruction, pixels in [-1, 1]
    recon_label_preserved: list[float]  # per level: fraction of reconstructions the classifier labels as the original
    recon_clean_accuracy: float       # the classifier's accuracy on the study's clean images, fraction
    t_star: float | None              # step where label preservation falls below t_star_rule's threshold; None: never
    t_star_rule: str                  # the rule for t_star, in words
    quality_classifier_fid: float     # Frechet distance in the classifier's feature space, samples vs test images
    quality_mean_confidence: float    # the samples' mean top-class probability
    quality_size: int                 # samples (and test images) in the quality proxy
    probe: ProbeResult                # 2.3(b): the linear probe of the digit class
    n_sampled: int | None = None      # images drawn in that pass: max(n_final_samples, quality_size)
    alpha_bar: list[float] | None = None  # the run's schedule, alpha_bar_t for t = 1..T (float32 values)
    observations: Observations | None = None  # 2.2(d): the final samples' statistics, comparable with the VAE's
    bound: VariationalBound | None = None  # Q2.3 measured: the variational bound on -log p(x_0), in bits/dim
    discriminator: DiscriminatorResult | None = None  # Q3 on the quality samples: JSD and rejection sampling
    evaluation_seconds: dict[str, float] | None = None  # each final evaluation's seconds, by name

    NESTED: ClassVar = {"probe": ProbeResult.from_dict,
                        "observations": lambda v, where: Observations.from_dict(v, where),
                        "bound": lambda v, where: VariationalBound.from_dict(v, where),
                        "discriminator": lambda v, where: DiscriminatorResult.from_dict(v, where)}


# --------------------------------------------------------------------------- Problem 3

@dataclass(kw_only=True)
class SimSiamSummary(Schema):
    problem: str = "simsiam"
    ablation: str                     # name in experiments.presentation.names.ABLATION_NAMES
    backbone: str                     # name in experiments.presentation.names.BACKBONES
    epochs: int                       # epochs trained
    dataset: str                      # data source: "cifar10" or "synthetic"
    batch_size: int                   # images per optimiser step
    dim: int                          # projector output dimension d
    peak_lr: float                    # learning rate after warm-up (base_lr x batch / 256)
    final_loss: float                 # last epoch's mean training loss (negative cosine similarity)
    final_knn_accuracy: float         # kNN test accuracy at the last monitored epoch, fraction
    final_knn_epoch: int              # that epoch
    best_knn_accuracy: float          # best kNN test accuracy over monitored epochs, fraction
    best_knn_epoch: int               # its epoch
    knn_k: int                        # neighbours of the kNN monitor (clipped to the memory bank)
    final_collapse_std: float         # std of the l2-normalised outputs per dimension, last monitored epoch
    collapse_std_reference: float     # that std for outputs spread uniformly over the sphere, 1 / sqrt(d)
    linear_probe_accuracy: float | None        # linear probe test accuracy on frozen features; None: no probe
    linear_probe_train_accuracy: float | None  # its training accuracy; None: no probe
    train_seconds_per_epoch: float    # median seconds of training steps per epoch
    train_images_per_s: float         # median training throughput, images per second
    train_wall_seconds: float         # seconds in training steps, all epochs
    wall_seconds: float               # seconds from the start to the last epoch's end, evaluation included
    spectrum: SpectrumResult | None = None  # Q4: F's spectrum and the predictor's alignment, last measured epoch
    evaluation_seconds: dict[str, float] | None = None  # each final evaluation's seconds, by name

    NESTED: ClassVar = {"spectrum": lambda v, where: SpectrumResult.from_dict(v, where)}


# --------------------------------------------------------------------------- descriptive answers
# (experiments.measurements.observe)

@dataclass(kw_only=True)
class DigitPatterns(Schema):
    n_images: int                     # images the digit classifier read
    threshold: float                  # top-class probability at or above which an image counts as a clear digit
    confident_fraction: float         # fraction of images with top-class probability >= threshold
    mean_top_probability: float       # mean top-class probability
    class_histogram: list[int]        # images per predicted class, classes 0..9


@dataclass(kw_only=True)
class SampleObservations(Schema):
    sharpness_ratio: float            # Laplacian energy of the samples / that of the reference test images
    digits: DigitPatterns             # what the run's digit classifier reads in the samples
    classifier_fid: float             # Frechet distance in the classifier's features, samples vs as many test images
    fid_size: int                     # images per set in that distance (the estimate is biased up for small sets)
    # None in summaries written before these existed (experiments.measurements.observe.blobs):
    contrast_ratio: float | None = None  # grey-level variance within an image, samples / test images (mean over each)
    blobs: bool | None = None         # the blob rule fired: smooth colour fields with contrast but without edges
    blob_rule: str | None = None      # that rule, in words with its thresholds

    NESTED: ClassVar = {"digits": DigitPatterns.from_dict}


@dataclass(kw_only=True)
class ReconstructionObservations(Schema):
    sharpness_ratio: float            # Laplacian energy of the reconstructions / that of their originals
    n_images: int                     # images reconstructed
    t: int | None = None              # DDPM: the noise step t' reconstructed from; None for the VAE


@dataclass(kw_only=True)
class StripObservations(Schema):
    n_strips: int                     # interpolation strips
    n_frames: int                     # frames per strip, ends included
    mean_step: float                  # RMS change per pixel between consecutive frames, pixels in [0, 1]
    evenness: float                   # mean step / largest step of a strip, averaged over strips (1: equal steps)
    steps: list[float]                # each step's RMS change, averaged over strips, in order
    middle_confident_fraction: float  # fraction of the frames between the ends read as a clear digit


@dataclass(kw_only=True)
class Interpolations(Schema):
    test: StripObservations           # strips between the posterior means of two test images
    prior: StripObservations          # strips between two prior draws

    NESTED: ClassVar = {"test": StripObservations.from_dict, "prior": StripObservations.from_dict}


@dataclass(kw_only=True)
class Observations(Schema):
    samples: SampleObservations       # the final samples
    reference: DigitPatterns          # the test images they are compared with, read by the same classifier
    reconstructions: ReconstructionObservations | None = None  # None: not measured
    interpolations: Interpolations | None = None               # VAE only

    NESTED: ClassVar = {"samples": SampleObservations.from_dict, "reference": DigitPatterns.from_dict,
                        "reconstructions": ReconstructionObservations.from_dict,
                        "interpolations": Interpolations.from_dict}


# --------------------------------------------------------------------------- two more families
# (experiments.problems.flow, .gan)

@dataclass(kw_only=True)
class FlowSummary(YardstickFields, Schema):
    problem: str = "flow"
    # The yardstick's three sample measures, required here (field(): no default inherited from YardstickFields).
    fid: float = dataclasses.field()
    precision: float = dataclasses.field()
    recall: float = dataclasses.field()
    epochs: int                       # epochs trained
    dataset: str                      # data source: "svhn" or "synthetic"
    bits_per_dim: float               # exact -log p(x) of uniformly dequantised test images, 8-bit scale, bits/dim
    bits_per_dim_n_images: int        # test images in it
    final_train_loss: float           # last epoch's mean training loss, bits/dim
    classifier_test_accuracy: float   # the run's digit classifier, test accuracy
    observations: Observations        # the final samples (temperature 1), as the VAE's and DDPM's
    discriminator: DiscriminatorResult  # Q3's JSD estimate on the flow's samples
    train_wall_seconds: float         # seconds in training steps, all epochs
    wall_seconds: float               # seconds from the start to the last epoch's end, evaluation included

    NESTED: ClassVar = {"observations": lambda v, where: Observations.from_dict(v, where),
                        "discriminator": lambda v, where: DiscriminatorResult.from_dict(v, where)}


@dataclass(kw_only=True)
class GANSummary(YardstickFields, Schema):
    problem: str = "gan"
    # The yardstick's three sample measures, required here (field(): no default inherited from YardstickFields).
    fid: float = dataclasses.field()
    precision: float = dataclasses.field()
    recall: float = dataclasses.field()
    epochs: int                       # epochs trained
    dataset: str                      # data source: "svhn" or "synthetic"
    spectral_norm: bool               # spectral normalisation in the discriminator
    final_loss_d: float               # last epoch's mean discriminator loss (non-saturating GAN), nats
    final_loss_g: float               # last epoch's mean generator loss, nats
    final_jsd_train: float            # log 2 - loss_d / 2 over the last epoch: the JSD the training D sees, nats
    classifier_test_accuracy: float   # the run's digit classifier, test accuracy
    observations: Observations        # the final samples of the EMA generator
    discriminator: DiscriminatorResult  # Q3's JSD estimate on the GAN's samples, a fresh discriminator
    train_wall_seconds: float         # seconds in training steps, all epochs
    wall_seconds: float               # seconds from the start to the last epoch's end, evaluation included

    NESTED: ClassVar = {"observations": lambda v, where: Observations.from_dict(v, where),
                        "discriminator": lambda v, where: DiscriminatorResult.from_dict(v, where)}


SCHEMAS: dict[str, type[Schema]] = {"vae": VAESummary, "ddpm": DDPMSummary, "simsiam": SimSiamSummary,
                                    "flow": FlowSummary, "gan": GANSummary}


def load(path: Path) -> dict:
    """The JSON object in `path`; a SummaryError naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SummaryError(f"{path} is not valid JSON ({e}); delete it (a rerun with --resume rewrites it)") from None


def read(run_dir: str | Path) -> VAESummary | DDPMSummary | SimSiamSummary | FlowSummary | GANSummary:
    """run_dir/summary.json as its problem's schema (by its key 'problem'); SummaryError when it does not match."""
    path = Path(run_dir) / FILE
    problem = load(path).get("problem")
    if problem not in SCHEMAS:
        raise SummaryError(f"{path}: key 'problem' is {problem!r}, expected one of {list(SCHEMAS)}")
    return SCHEMAS[problem].read(run_dir)


# --------------------------------------------------------------------------- Part III: the theory measured

@dataclass(kw_only=True)
class Estimate(Schema):
    nats: float                       # mean over the images, nats per image
    mc_se: float                      # Monte Carlo standard error of that mean, given the images, nats
    image_se: float | None            # standard error across the images (the test-set sample), nats; None: one image
    bits_per_dim: float | None = None  # for a bound on log p(x): -log p(x) as bits/dim on the 8-bit scale [0, 256)
    #                                    (as VAESummary.test_bits_per_dim_8bit); None for a gap


def _estimates(*names: str) -> dict[str, Callable[[Any, str], Any]]:
    return {name: Estimate.from_dict for name in names}


@dataclass(kw_only=True)
class AmortisationGaps(Schema):
    """Q1.3-1.4 on the trained VAE (experiments.measurements.amortisation): per test image, the encoder's ELBO, the
    ELBO of
    the image's own best Gaussian q*_x (Adam from the encoder's output), and the importance-sampled log p(x)."""
    n_images: int                     # test images measured
    dims: int                         # dimensions per image, C * H * W
    ll_K: int                         # importance samples of the log-likelihood
    amortised_elbo: Estimate          # ELBO of the encoder's q_phi(z|x)
    per_point_elbo: Estimate          # ELBO of the per-point optimum q*_x
    log_likelihood: Estimate          # K-sample importance-weighted log p(x), proposal ll_proposal
    amortisation_gap: Estimate        # per-point - amortised ELBO (>= 0 by Q1.3)
    approximation_gap: Estimate       # log-likelihood - per-point ELBO (KL(q*_x || p(z|x)), the family's cost)
    negative_images: int              # images whose gap is negative beyond Monte Carlo error (amortisation.negative)
    per_point_steps: int              # Adam steps taken (the images stop together)
    stopping_rule: str                # the per-point optimisation's stopping rule, in words
    seconds_amortised: float          # one encoder pass over the images (the amortised inference)
    seconds_per_point: float          # the per-point optimisation, encoder pass included (Q1.4b)
    seconds: float                    # the whole measurement, log-likelihood and test draws included
    # The proposal of log_likelihood: "per-point" (q*_x) or "encoder" (q_phi, the graded estimate, whose slack grows
    # with the amortisation gap and biases the approximation gap low; summaries written before "per-point" existed).
    ll_proposal: str = "encoder"
    per_point_converged: bool | None = None  # the per-point optimisation met its tolerance (False: its step limit)
    graded_log_likelihood: Estimate | None = None  # VAE.log_likelihood (q_phi, ll_K draws) on the same images

    NESTED: ClassVar = _estimates("amortised_elbo", "per_point_elbo", "log_likelihood", "graded_log_likelihood",
                                  "amortisation_gap", "approximation_gap")


@dataclass(kw_only=True)
class VariationalBound(Schema):
    """Q2.3 on the trained DDPM (experiments.measurements.bound): -ELBO = L_0 + sum_{t=2}^T L_{t-1} + L_T >= -log
    p(x_0)."""
    n_images: int                     # test images measured
    dims: int                         # dimensions per image, C * H * W
    nll_bound: Estimate               # the bound -ELBO, nats per image, and as bits/dim on the 8-bit scale
    reconstruction: float             # L_0, mean over the images, nats
    denoising: float                  # sum_{t=2}^T L_{t-1}, stratified estimate, mean over the images, nats
    prior: float                      # L_T, closed form, mean over the images, nats
    decoder: str                      # L_0's decoder: "discrete" (Ho et al. 2020, eq. 13) or "gaussian" (a density)
    variance: str                     # the reverse variance sigma_t^2: "posterior" (beta~_t) or "beta" (beta_t)
    exact_steps: int                  # steps t = 2, 3, ... evaluated one by one
    strata: int                       # strata over the remaining steps
    draws_per_stratum: int            # uniform draws of t in each stratum
    network_evaluations: int          # noise-model evaluations per image
    seconds: float                    # wall time of the measurement

    NESTED: ClassVar = _estimates("nll_bound")


# --------------------------------------------------------------------------- Question 3 on the VAE and DDPM samples

@dataclass(kw_only=True)
class Interval(Schema):
    estimate: float                   # the point estimate
    low: float                        # lower end of its percentile bootstrap interval
    high: float                       # upper end
    level: float                      # the interval's coverage, e.g. 0.95


@dataclass(kw_only=True)
class DiscriminatorResult(Schema):
    """experiments.measurements.discriminator.measure: real test images (p1) against a model's samples (p0), held-out
    halves."""
    jsd: Interval                     # 3.1's estimate of JSD(p0, p1) on held-out images, nats (a lower bound)
    accepted_fraction: float          # discriminator rejection sampling (3.2's weights): held-out samples kept
    n_accepted: int                   # held-out samples kept
    fid_samples: float                # classifier-FID, every held-out sample vs the held-out test images
    fid_accepted: float | None        # the same for the accepted samples; None when fewer than 2
    fid_subset: float | None          # for a random subset of the samples of the accepted size (the fair reference)
    jsd_accepted: Interval            # a fresh discriminator's estimate with the accepted samples as p0, nats
    jsd_subset: Interval              # the same with the random subset as p0 (the fair reference)
    n_real_train: int                 # test images the discriminator trained on
    n_fake_train: int                 # samples it trained on
    n_real_test: int                  # held-out test images
    n_fake_test: int                  # held-out samples
    epochs: int                       # training epochs of each discriminator
    seconds: float                    # wall time of the whole measurement (three discriminators)
    gamma_quantile: float | None = None  # DRS's gamma shift (Azadi et al.) at this quantile of F; None: no shift

    NESTED: ClassVar = {"jsd": Interval.from_dict, "jsd_accepted": Interval.from_dict,
                        "jsd_subset": Interval.from_dict}


# --------------------------------------------------------------------------- Question 4 on the SimSiam runs

SPECTRUM_FOLDER = "spectrum"  # artifacts/spectrum/epoch_NNN.json: one SpectrumResult per measured epoch


@dataclass(kw_only=True)
class Alignment(Schema):
    """experiments.measurements.spectrum.alignment: the predictor's linear map W_p in the eigenbasis U of F, M = U^T
    W_p U."""
    diagonal_fraction: float          # ||diag M||^2 / ||M||_F^2: 1 when W_p shares F's eigenvectors
    chance: float                     # its expectation for the same W_p in a uniformly random basis of span(U),
    #                                   closed form (1 / d, a map with i.i.d. entries, where chance_spread is None)
    cosines: list[float]              # cos(W_p u_i, u_i) for F's top eigenvectors u_i, largest first
    diagonal: list[float]             # u_i^T W_p u_i for the same u_i
    # None in summaries written while the chance level was 1 / d:
    chance_spread: float | None = None     # SD of the diagonal fraction over random bases (Monte Carlo)
    excess: float | None = None            # (diagonal_fraction - chance) / (1 - chance); None also when chance = 1
    mean_abs_cos: float | None = None      # mean |cosines|
    cos_chance: float | None = None        # its expectation in a random basis (Monte Carlo) ...
    cos_chance_se: float | None = None     # ... with this standard error ...
    cos_chance_spread: float | None = None  # ... and this SD of a mean over as many random-basis columns
    cos_excess: float | None = None        # (mean_abs_cos - cos_chance) / (1 - cos_chance)
    rotations: int | None = None           # random bases in the Monte Carlo


@dataclass(kw_only=True)
class SpectrumResult(Schema):
    """experiments.measurements.spectrum.measure on a fixed batch of test images, F = E[z z^T] of the projector's
    outputs z."""
    epoch: int                        # epoch after which it was measured
    eigenvalues: list[float]          # F's top eigenvalues divided by the largest, descending
    largest: float                    # F's largest eigenvalue
    trace: float                      # tr F = mean ||z||^2 over the batch
    effective_rank: float             # exp(entropy of the normalised spectrum), in [1, d]
    alignment: Alignment | None       # of the predictor's map; None for a run without a predictor
    predictor_map: str                # how the non-linear predictor's linear map W_p was read, in words
    d: int                            # width of z
    n: int                            # images in the batch
    seconds: float                    # wall time of this measurement

    NESTED: ClassVar = {"alignment": Alignment.from_dict}


def spectra(run_dir: str | Path) -> list[SpectrumResult]:
    """A SimSiam run's per-epoch spectrum measurements (artifacts/spectrum/), by epoch; [] when it has none."""
    folder = Path(run_dir) / "artifacts" / SPECTRUM_FOLDER
    found = [SpectrumResult.from_dict(load(path), str(path)) for path in sorted(folder.glob("epoch_*.json"))]
    return sorted(found, key=lambda r: r.epoch)
