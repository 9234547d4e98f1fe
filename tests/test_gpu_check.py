"""benchmarks/gpu_check.py on the CPU: one row per (problem, precision), each with a finite loss."""
import math

from benchmarks import gpu_check


def test_quick_cpu_run_has_every_cell(tmp_path):
    out = tmp_path / "check.md"
    text = gpu_check.main(["--quick", "--device", "cpu", "--out", str(out)])
    assert out.read_text() == text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header, cells = rows[0], {(r[0].strip(), r[1].strip()): r for r in rows[1:]}
    assert set(cells) == {(p, q) for p in gpu_check.PROBLEMS for q in gpu_check.PRECISIONS}
    loss, images_per_s = header.index(" loss "), header.index(" images/s ")
    for row in cells.values():
        assert math.isfinite(float(row[loss])) and float(row[images_per_s].replace(",", "")) > 0
    assert "bench_ddpm" not in text                      # --quick skips the existing benchmarks
