"""The flow's and the GAN's full-preset training step against the DDPM's, measured in the same run.

    .venv/bin/python benchmarks/bench_families.py                      # CUDA if present, else CPU
    .venv/bin/python benchmarks/bench_families.py --device cpu --batch 16 --steps 2

The full presets of experiments/problems/flow.py and experiments/problems/gan.py are sized so that each trains on at
most a
quarter of the DDPM full run's training FLOPs (counted, experiments.measurements.yardstick.training_flops_per_image).
Counted FLOPs are not time: a small network at batch 64 is bound by kernel launches on a GPU. This script
times one training step per image of each full-preset model (forward, backward, optimiser; fp32, eager,
random weights and images) after one untimed step, and prints, per family, the seconds per image, the FLOPs per
image, and the whole full run's projected training time as a share of the DDPM's on this device:
    share = (seconds per image x images per epoch x epochs) / (the DDPM's).
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import device_name
from experiments.harness import devices
from experiments.measurements import yardstick
from experiments.problems import ddpm, flow, gan

MODULES = {"ddpm": ddpm, "flow": flow, "gan": gan}


def step_seconds(family: str, batch: int, steps: int, device: torch.device) -> float:
    """Seconds per image of the family's full-preset training step (optimiser included)."""
    cfg = MODULES[family].config_for("full")
    torch.manual_seed(0)
    model = MODULES[family].build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if family == "ddpm":
            t = torch.randint(0, cfg.timesteps, (batch,), device=device)
            torch.nn.functional.smooth_l1_loss(model(x, t), torch.randn_like(x)).backward()
        elif family == "flow":
            flow.training_loss(model, ((x + 1) * 127.5).to(torch.uint8)).backward()
        else:
            gan.discriminator_step_loss(model, x).backward()
            gan.generator_step_loss(model, batch).backward()
        optimizer.step()

    step()
    t0 = devices.clock(device)
    for _ in range(steps):
        step()
    return (devices.clock(device) - t0) / (steps * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = devices.pick_device(args.device)
    print(f"device: {device_name(device)}; batch {args.batch}, {args.steps} timed steps each, fp32 eager")
    base = None
    print("| full preset | epochs | GFLOP / image (counted) | FLOPs vs DDPM | s / image (measured) | time vs DDPM |")
    print("|---|---|---|---|---|---|")
    for family in ("ddpm", "flow", "gan"):
        cfg = MODULES[family].config_for("full")
        flops = yardstick.training_flops_per_image(family, cfg) * cfg.epochs
        seconds = step_seconds(family, args.batch, args.steps, device)
        base = base or (flops, seconds * cfg.epochs)
        print(f"| {family}-full | {cfg.epochs} | {flops / cfg.epochs / 1e9:.3f} | {flops / base[0]:.2f} | "
              f"{seconds:.4g} | {seconds * cfg.epochs / base[1]:.2f} |")


if __name__ == "__main__":
    main()
