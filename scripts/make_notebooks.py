"""Write the thin per-problem notebooks in notebooks/ (run after changing this file).

    .venv/bin/python scripts/make_notebooks.py

Each notebook: set up (Colab: Drive for data and runs, the repository cloned or uploaded),
configure a preset, call the experiment (resuming after a disconnect), show every figure.
The environment variables A3_PRESET, A3_DATA, A3_WORK (data and runs) and A3_RESULTS (the run
folders only) override the defaults; the test suite runs every notebook with the smoke preset on
synthetic data, into the folder the report test then builds from.
"""
import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments.presentation import answers  # noqa: E402  (the repository is on the path only from here)

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell


def shown(heading: str, *pngs: str) -> list:
    """A figure's heading (markdown, '### ' added) and the cell showing its PNGs (Python expressions)."""
    return [md(f"### {heading}"), code(f"figures.show([{', '.join(pngs)}])")]


def measured(item: str, printing: str | None = None) -> list:
    """Under an item's figure: what the assignment asks and which summary.json fields answer it, then a cell
    printing those fields for the run (experiments.presentation.answers; `printing`: that cell's code, when not the
    default)."""
    return [md(answers.markdown(item)), code(printing or f'print(answers.answer(run_dir, "{item}"))')]

SETUP = code("""# Setup. On Colab: mount Drive (optional), fetch this repository, keep data and runs on Drive.
# Elsewhere: use the repository this notebook sits in. Environment variables override the defaults.
import os, subprocess, sys
from pathlib import Path

REPO_URL = os.environ.get("A3_REPO_URL", "")   # on Colab: the git URL of your copy of this repository
USE_DRIVE = True                                # on Colab: keep data/ and results/ on Google Drive
IN_COLAB = "google.colab" in sys.modules

if IN_COLAB:
    if USE_DRIVE:
        from google.colab import drive
        drive.mount("/content/drive")
        WORK = Path("/content/drive/MyDrive/ift6135-a3")
    else:
        WORK = Path("/content/ift6135-a3-work")
    ROOT = WORK / "code"                        # or upload the repository folder here by hand
    if not (ROOT / "experiments").exists():
        if not REPO_URL:
            raise SystemExit(f"Set REPO_URL above, or upload this repository to {ROOT}")
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(ROOT)], check=True)
    elif (ROOT / ".git").exists():              # a clone from an earlier session: take the fixes made since
        subprocess.run(["git", "-C", str(ROOT), "pull", "--ff-only"], check=False)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "einops"], check=True)  # the one package Colab lacks
else:
    ROOT = Path.cwd().resolve()
    while not (ROOT / "experiments").exists() and ROOT != ROOT.parent:
        ROOT = ROOT.parent
    WORK = Path(os.environ.get("A3_WORK", ROOT))
RESULTS = Path(os.environ.get("A3_RESULTS", WORK / "results"))   # the run folders (the report reads them)
os.chdir(ROOT)
sys.path.insert(0, str(ROOT))
print("repository:", ROOT, "| data under:", WORK, "| runs under:", RESULTS)""")

INTRO = """
On Colab: *Runtime > Change runtime type > GPU*, then *Run all*. With Google Drive mounted, the dataset
and the run folder live on Drive, so after a disconnect *Run all* again resumes at the last finished epoch."""

METADATA = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}, "accelerator": "GPU",
            "colab": {"provenance": [], "gpuType": "T4"}}


def vae() -> list:
    return [
        md("""# Problem 1: a variational autoencoder on SVHN

IFT6135-H2023, Assignment 3. This notebook trains the graded model in `vae_solution.py` with the
package's harness (`experiments/`) and shows every figure asked for in 1.3. It holds no model code:
everything it runs is in `vae_solution.py` and `experiments/problems/vae.py`, and is tested.
""" + INTRO),
        SETUP,
        code("""# Configuration: 'full' is the assignment's setting (batch 64, z_dim 32, Adam 1e-4, 30 epochs);
# 'smoke' is a 2-epoch check on a few hundred images. DATA: auto | svhn | synthetic.
import torch
from experiments.presentation import answers, figures
from experiments.problems import vae
from experiments.harness.devices import device_line

PRESET = os.environ.get("A3_PRESET", "full")
DATA = os.environ.get("A3_DATA", "auto")
cfg = vae.config_for(PRESET, data=DATA, data_root=str(WORK / "data"))
from benchmarks.cost import projected_line   # time estimated from benchmarks/measured/, else "not measured"
print(projected_line("vae", cfg))
OUT = RESULTS / vae.run_name(cfg)
print(cfg)
print(device_line())"""),
        code("""# Train, or resume after a disconnect (resume=True starts fresh when OUT holds no run yet).
run_dir = vae.run(cfg, OUT, resume=True)
FIG = run_dir / "figures"
print("dataset used:", figures.dataset_name(run_dir))"""),
        *shown("1.3 (a) Wall-clock time of training", 'FIG / "wall_clock.png"', 'FIG / "loss.png"'),
        *shown("1.3 (b) Samples every 5 epochs (fixed latent noise, so the grids compare across epochs)",
               'FIG / "samples_over_training.png"'),
        *measured("1.3b"),
        *shown("1.3 (c) Reconstructions of test images every 5 epochs", 'FIG / "reconstructions_over_training.png"'),
        *measured("1.3c"),
        *shown("1.3 (d) Samples at the end of training", 'FIG / "final_samples.png"'),
        *measured("1.3d"),
        *shown("1.3 (e) Latent profile of each class",
               'FIG / "latent_profiles_bars.png"', 'FIG / "latent_profiles_heatmap.png"'),
        *shown("1.3 (f) Interpolation in latent space", 'FIG / "interpolations.png"'),
        *measured("1.3f"),
        md("### Test log-likelihood (importance sampling, K = 100)"),
        code("""import json
summary = json.loads((run_dir / "summary.json").read_text())
print(f"log p(x) = {summary['test_log_likelihood_nats']:.1f} nats per image over {summary['ll_n_images']} test images "
      f"({summary['test_bits_per_dim']:.3f} bits/dim on the [-1, 1] scale, "
      f"{summary['test_bits_per_dim_8bit']:.3f} bits/dim on the 8-bit scale); "
      f"trained {summary['epochs']} epochs in {summary['train_wall_seconds'] / 60:.1f} min on {figures.dataset_name(run_dir)}")"""),
    ]


def ddpm() -> list:
    return [
        md("""# Problem 2: a denoising diffusion model (DDPM) on SVHN

IFT6135-H2023, Assignment 3. This notebook trains the graded U-Net of `ddpm_solution.py` with the
package's harness (`experiments/problems/ddpm.py`: the precision measured on your GPU, CUDA graphs, an EMA of the weights,
checkpoints every epoch) and shows every figure of 2.2, then the optional study of 2.3. It holds
no model code.
""" + INTRO),
        SETUP,
        code("""# Configuration: 'full' is the assignment's setting (batch 64, Adam 1e-4, T = 1000, linear betas,
# U-Net dim 32, mults (1, 2, 4, 8), 20 epochs); 'smoke' is a quick check (small U-Net, T = 50).
import json
import torch
from experiments.presentation import answers, figures
from experiments.problems import ddpm
from experiments.harness.devices import device_line

PRESET = os.environ.get("A3_PRESET", "full")
DATA = os.environ.get("A3_DATA", "auto")
cfg = ddpm.config_for(PRESET, data=DATA, data_root=str(WORK / "data"))
from benchmarks.cost import projected_line   # time estimated from benchmarks/measured/, else "not measured"
print(projected_line("ddpm", cfg))
OUT = RESULTS / ddpm.run_name(cfg)
VAE_RUN = RESULTS / f"vae-{PRESET}"   # the VAE notebook's run, for the side-by-side of 2.2(d)
print(cfg)
print(device_line())"""),
        code("""# Train, or resume after a disconnect; then the final samples, reconstruction study, quality proxy and probe.
run_dir = ddpm.run(cfg, OUT, resume=True, vae_run=VAE_RUN if VAE_RUN.exists() else None)
FIG = run_dir / "figures"
summary = json.loads((run_dir / "summary.json").read_text())
print("dataset used:", figures.dataset_name(run_dir))"""),
        *shown("2.2 (a) Wall-clock time of training", 'FIG / "wall_clock.png"', 'FIG / "loss.png"'),
        md("### 2.2 (b) Samples every 5 epochs (EMA weights, the same noise at every epoch)\n"
           "Full ancestral sampling with T steps; below it, the DDIM previews (50 steps) taken every epoch."),
        code("""figures.show([FIG / "samples_over_training.png", FIG / "previews_over_training.png"])"""),
        md("### 2.2 (c) Reconstructions: noise test images to t', denoise them back from t'"),
        code("""figures.show([FIG / "reconstructions.png", FIG / "reconstruction_curves.png"])
print("t* =", summary["t_star"], "|", summary["t_star_rule"])
print("digit classifier test accuracy:", round(summary["classifier_test_accuracy"], 3))"""),
        *measured("2.2c"),
        md("### 2.2 (d) Samples at the end of training, and beside the VAE's"),
        code("""figures.show([FIG / "final_samples.png", FIG / "ddpm_vs_vae.png"])
print(f"sampling {summary['n_sampled']} images with T = {summary['timesteps']}: {summary['sample_seconds']:.1f} s")"""),
        *measured("2.2d", """print(answers.answer(run_dir, "2.2d"))
if (VAE_RUN / "summary.json").exists():   # the VAE's samples on the same statistics
    print("\\nVAE:", answers.answer(VAE_RUN, "1.3d"), sep="\\n")"""),
        md("### 2.3 (a) (optional) T = 500 and T = 1500 on the same training budget\n"
           "Set `RUN_T_STUDY = True` to train the two extra models (each as long as the main one)."),
        code("""RUN_T_STUDY = PRESET == "smoke"
if RUN_T_STUDY:
    runs = [run_dir]
    for variant in ddpm.variants(PRESET)[1:]:
        other = ddpm.config_for(PRESET, data=DATA, data_root=str(WORK / "data"), **variant)
        runs.append(ddpm.run(other, RESULTS / ddpm.run_name(other), resume=True))
    figures.show([figures.ddpm_timesteps(runs, RESULTS / "figures")])"""),
        *measured("2.3a", """for path in (runs if RUN_T_STUDY else [run_dir]):
    print(path.name, answers.answer(path, "2.3a"), sep="\\n", end="\\n\\n")"""),
        *shown("2.3 (b) (optional) What the U-Net's bottleneck knows: a linear probe of the digit class",
               'FIG / "probe.png"'),
    ]


def simsiam() -> list:
    return [
        md("""# Problem 3: SimSiam on CIFAR-10, and its ablations

IFT6135-H2023, Assignment 3. This notebook trains the graded `q3_solution.SimSiam` with the package's
harness (`experiments/problems/simsiam.py`: the training set on the GPU as uint8, both views augmented there per
sample, mixed precision (bf16, or fp16 on a T4) and channels_last, the kNN and collapse monitors every
epoch), once per ablation, and shows
the figures of questions 4 and 5. It holds no model code.
""" + INTRO),
        SETUP,
        code("""# Configuration: 'full' is the starter's recipe (the starter's resnet18, batch 1024, SGD lr 0.03 x batch / 256,
# cosine, 100 epochs per ablation); 'smoke' is a quick check. DATA: auto | cifar10 | synthetic.
import torch
from experiments.presentation import answers, figures, names
from experiments.problems import simsiam
from experiments.harness.devices import device_line

PRESET = os.environ.get("A3_PRESET", "full")
DATA = os.environ.get("A3_DATA", "auto")
ABLATIONS = list(simsiam.ABLATIONS)   # what each one changes: experiments/presentation/names.py
print("ablations:", names.ablation_help())
from benchmarks.cost import projected_line   # time estimated from benchmarks/measured/, else "not measured"
print("each ablation:", projected_line("simsiam", simsiam.config_for(PRESET, data=DATA)))
print(device_line())"""),
        code("""# Train every ablation, or resume the one a disconnect interrupted (finished runs are skipped quickly).
runs = {}
for name in ABLATIONS:
    cfg = simsiam.config_for(PRESET, data=DATA, data_root=str(WORK / "data"), ablation=name)
    runs[name] = simsiam.run(cfg, RESULTS / simsiam.run_name(cfg), resume=True)
OUT = RESULTS / f"simsiam-{PRESET}-figures"
paths = figures.simsiam_comparisons(list(runs.values()), OUT)
print("dataset used:", figures.dataset_name(runs[names.BASELINE]))"""),
        *shown("Q4: with and without stop-gradient (training loss, kNN accuracy, collapse)", 'OUT / "simsiam_q4.png"'),
        *shown("Q5 (a): without the predictor (identity)", 'OUT / "simsiam_q5a.png"'),
        *shown("Q5 (b): projector output 4096, and batch 4096 (linear lr scaling, 10-epoch warm-up)",
               'OUT / "simsiam_q5b.png"'),
        md("### Final and best kNN accuracy per ablation"),
        code("""path, rows, markdown = figures.simsiam_table(list(runs.values()), OUT)
figures.show([path])
print(markdown)"""),
        *measured("3.4", """for name in ABLATIONS:
    print(name, answers.answer(runs[name], "3.4"), sep="\\n", end="\\n\\n")"""),
        md("### Per-run training curves and wall-clock"),
        code("""figures.show([runs[name] / "figures" / png for name in ABLATIONS for png in ("training.png", "wall_clock.png")])"""),
    ]


REPORT = [
    md("### The report\n"
       "Builds `report/report.pdf` from the run folders on Drive (all three problems' latest runs; a missing run shows "
       "a framed placeholder naming the command that makes it). On Colab this installs LaTeX first (a few minutes). "
       "Put your name and student ID below: they go on the title page (or write `report/student.tex`)."),
    code("""BUILD_REPORT = IN_COLAB   # set True to build it elsewhere too (needs latexmk)
STUDENT = {"A3_STUDENT_NAME": "", "A3_STUDENT_ID": ""}   # your name and student ID, for the title page
if BUILD_REPORT:
    env = {**os.environ, **{k: v for k, v in STUDENT.items() if v}}
    subprocess.run(["bash", "scripts/build_report.sh", "--results", str(RESULTS)], check=True, env=env)
    print("report:", ROOT / "report" / "report.pdf")"""),
]

NOTEBOOKS = {"1_vae.ipynb": vae, "2_ddpm.ipynb": ddpm, "3_simsiam.ipynb": simsiam}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.cells = cells() + REPORT
        for i, cell in enumerate(nb.cells):  # ids by position: regenerating leaves unchanged cells unchanged
            cell.id = f"cell-{i:02d}"
        nb.metadata = METADATA
        nbf.write(nb, ROOT / "notebooks" / name)
        print("wrote", ROOT / "notebooks" / name)


if __name__ == "__main__":
    main()
