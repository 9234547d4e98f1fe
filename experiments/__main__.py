"""Command line: python -m experiments {vae,ddpm,simsiam,flow,gan,all} [--preset smoke|full] [--data ...] [--out DIR]
[--resume] ...

Each run writes one folder (default results/<run name>, e.g. results/ddpm-full or
results/ddpm-full-T500); --resume continues an interrupted run in that folder. `all` runs
every problem and every variant the report uses (the DDPM with T = 500 and 1500, the five
SimSiam ablations), then the two families beside the assignment's (a normalizing flow and a GAN, measured
on the VAE's and DDPM's yardstick), each in its own folder under --out (default results/).

On several GPUs: torchrun --standalone --nproc_per_node=N -m experiments ... (experiments.harness.distributed):
data-parallel with the same global batch; rank 0 writes the run folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.harness import config, data, distributed, execution
from experiments.harness.files import CheckpointError, DiskFullError
from experiments.harness.lock import RunLockedError
from experiments.harness.loop import NonFiniteLossError
from experiments.presentation import names
from experiments.problems import ddpm, flow, gan, simsiam, vae

PROBLEMS = {"vae": vae, "ddpm": ddpm, "simsiam": simsiam,
            "flow": flow, "gan": gan}   # the two families beside the assignment's, run after the VAE and DDPM


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problem", choices=[*PROBLEMS, "all"])
    parser.add_argument("--preset", choices=["smoke", "full"], default="full")
    parser.add_argument("--data", choices=data.CHOICES, default="auto",
                        help="auto: the real dataset when present or downloadable, else the synthetic stand-in")
    parser.add_argument("--data-root", default=None, help="where datasets are stored/downloaded (default: data/)")
    parser.add_argument("--out", default=None, help="run folder (for 'all': parent folder); default results/...")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out after an interruption")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:1, mps")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's number of epochs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None,
                        help="override the learning rate (SimSiam: base_lr, scaled by batch/256); a resume may "
                             "change it, e.g. to get past a divergence (recorded in provenance.json)")
    parser.add_argument("--precision", choices=execution.PRECISIONS, default=None,
                        help="auto (default): on a GPU, the fastest of fp32 (TF32 on compute capability >= 8.0), "
                             "bf16 (>= 8.0) and fp16 with gradient scaling (>= 7.0), timed on a few training "
                             "steps; fp32 on CPU; a resumed run keeps its precision")
    parser.add_argument("--compile", choices=execution.COMPILE_MODES, default=None,
                        help="auto (default): the DDPM's and VAE's training steps and the DDPM samplers as CUDA "
                             "graphs (torch.compile reduce-overhead) on a GPU, eager on CPU; SimSiam always eager; "
                             "none: eager")
    ddpm_options = parser.add_argument_group("ddpm")
    ddpm_options.add_argument("--timesteps", type=int, default=None, help="T (default 1000; 2.3a uses 500 and 1500)")
    simsiam_options = parser.add_argument_group("simsiam")
    simsiam_options.add_argument("--ablation", choices=names.ABLATION_NAMES, default=None,
                                 help=f"default {names.BASELINE}. {names.ablation_help()}")
    simsiam_options.add_argument("--backbone", choices=names.CLI_BACKBONES, default=None, help=names.BACKBONE_HELP)
    simsiam_options.add_argument("--micro-batch", type=int, default=None,
                                 help="images per forward/backward pass, gradients accumulated over the batch "
                                      "(default: planned from the GPU's free memory); under torchrun, per GPU")
    simsiam_options.add_argument("--no-sync-bn", dest="sync_bn", action="store_false", default=None,
                                 help="under torchrun, batch norm over each GPU's share of the batch (default: "
                                      "synchronised over the whole batch, torch.nn.SyncBatchNorm)")
    gan_options = parser.add_argument_group("gan")
    gan_options.add_argument("--spectral-norm", action="store_true", default=None,
                             help="spectral normalisation in the discriminator (Miyato et al. 2018)")
    return parser.parse_args(argv)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; its message is the command that continues the run."""


def run_problem(name: str, args: argparse.Namespace, out: Path | None, **variant) -> Path:
    """One run of problem `name`; `variant` holds problem-specific options (e.g. timesteps)."""
    module = PROBLEMS[name]
    lr = {config.lr_field(module.PRESETS[args.preset]): args.lr}
    cfg = module.config_for(args.preset, seed=args.seed, epochs=args.epochs, data=args.data,
                            data_root=args.data_root, device=args.device, precision=args.precision,
                            compile=args.compile, **lr, **variant)
    out = out or Path("results") / module.run_name(cfg)
    try:
        run_dir = module.run(cfg, out, resume=args.resume)
    except NonFiniteLossError as e:
        lower = getattr(cfg, config.lr_field(cfg)) / 10
        raise NonFiniteLossError(f"{e}\nTo resume with a 10x lower learning rate:\n  "
                                 f"{run_command(name, args, out, variant, lr=f'{lower:.3g}')}") from None
    except FileExistsError as e:
        raise FileExistsError(f"{e}\nTo continue it:\n  {run_command(name, args, out, variant)}") from None
    except KeyboardInterrupt:
        raise Interrupted(run_command(name, args, out, variant)) from None
    if distributed.is_writer():  # one line, rank 0's, under torchrun
        print(f"{name}: run folder {run_dir} (figures in {run_dir / 'figures'}, numbers in {run_dir / 'summary.json'})")
    return run_dir


def run_command(name: str, args: argparse.Namespace, out: Path, variant: dict, **changes) -> str:
    """The command line that resumes run `out` of problem `name`: this interpreter, every option this command
    was given (the preset, --data and --out always), then `changes` (e.g. lr) over them, and --resume."""
    given = {k: getattr(args, k)
             for k in ("data", "data_root", "device", "epochs", "seed", "precision", "compile", "lr")}
    named = {k: variant.get(k) for k in ("timesteps", "ablation", "backbone")}
    rest = {k: v for k, v in variant.items() if k not in named}
    if rest.pop("sync_bn", None) is False:
        rest["no_sync_bn"] = True  # the flag --no-sync-bn
    return names.command(name, args.preset, **named, out=str(out), resume=True, python=names.interpreter(),
                         **{**given, **rest, **changes})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    options = {"timesteps": args.timesteps, "ablation": args.ablation, "backbone": args.backbone,
               "micro_batch": args.micro_batch, "spectral_norm": args.spectral_norm, "sync_bn": args.sync_bn}
    try:
        if args.problem == "all":
            parent = Path(args.out or "results")
            for name, module in PROBLEMS.items():
                for variant in module.variants(args.preset) if hasattr(module, "variants") else [{}]:
                    cfg = module.config_for(args.preset, **variant)
                    run_problem(name, args, parent / module.run_name(cfg), **variant)
        else:
            given = {k: v for k, v in options.items() if v is not None}
            run_problem(args.problem, args, Path(args.out) if args.out else None, **given)
    except (NonFiniteLossError, data.DatasetError, FileExistsError, ValueError, RunLockedError, CheckpointError,
            DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        how = f":\n  {e}" if str(e) else " with --resume"
        print(f"interrupted: the last finished epoch is checkpointed; continue it{how}", file=sys.stderr)
        return 130
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
