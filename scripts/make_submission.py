"""Write the Gradescope bundle: the graded files and the report PDF, after checking each file.

    python scripts/make_submission.py [--report report/report.pdf] [--out submission] [--no-report]

Checks, per graded file (vae_solution.py, ddpm_solution.py, q3_solution.py, q3_misc.py):
  source   no notebook line (`!pip ...`, `%pip ...`, any line starting with ! or %), valid Python,
           no `.cuda()` call, imports only torch, torchvision, numpy, matplotlib, tqdm, einops, PIL,
           the standard library and, for q3_solution.py, q3_misc (uploaded beside it);
  import   imported alone in a fresh temporary folder, in a subprocess with CUDA hidden
           (CUDA_VISIBLE_DEVICES=""): it must import, print nothing on stdout or stderr, create no
           file, leave CUDA uninitialised and leave the global random number generators untouched
           (no seeding, no draws).
The first failed check stops the script with a message naming the file and the problem (exit 1).
The report PDF is required unless --no-report is given.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRADED = ("vae_solution.py", "ddpm_solution.py", "q3_solution.py", "q3_misc.py")
ALLOWED_PACKAGES = frozenset({"torch", "torchvision", "numpy", "matplotlib", "tqdm", "einops", "PIL"})
# Graded modules a graded file may import: uploaded together, they sit in the same folder.
SIBLINGS = {"q3_solution.py": ("q3_misc",)}
IMPORT_TIMEOUT_S = 300
_NOTEBOOK_LINE = re.compile(r"^\s*[!%]")
_PIP = re.compile(r"[!%]\s*pip\b")

# Run in the temporary folder: preload the heavy modules the file imports (argv[2], JSON), record
# the global RNG states, import the module between two markers, then report on one line.
_PROBE = r"""
import importlib, json, random, sys
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
def state():
    s = {"random": repr(random.getstate())}
    if "numpy" in sys.modules:
        s["numpy"] = sys.modules["numpy"].random.get_state()[1].tobytes().hex()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        s["torch"] = (torch.get_rng_state().numpy().tobytes().hex(), torch.initial_seed())
    return s
before = state()
for stream in (sys.stdout, sys.stderr):
    stream.write("@@probe-start@@\n")
    stream.flush()
importlib.import_module(sys.argv[1])
for stream in (sys.stdout, sys.stderr):
    stream.flush()
    stream.write("\n@@probe-end@@\n")
after = state()
torch = sys.modules.get("torch")
print(json.dumps({"cuda_initialized": bool(torch and torch.cuda.is_initialized()),
                  "rng_untouched": all(after[k] == v for k, v in before.items())}))
"""
PRELOADED = ("numpy", "torch")  # imported before the module when it imports them, to watch their RNGs


class SubmissionError(ValueError):
    """A graded file (or the report) fails a check; the message names the file and the problem."""


def check_source(path: Path, siblings: tuple[str, ...] = ()) -> set[str]:
    """The static checks: notebook lines, syntax, .cuda() calls, imports. Raises SubmissionError;
    returns the top-level names of the modules the file imports."""
    name = path.name
    text = path.read_text()
    for number, line in enumerate(text.splitlines(), 1):
        if _PIP.search(line) or _NOTEBOOK_LINE.match(line):
            raise SubmissionError(f"{name}, line {number}: notebook command {line.strip()!r}; "
                                  "remove every !pip / %pip (and other ! or %) line before uploading")
    try:
        tree = ast.parse(text, filename=name)
    except SyntaxError as e:
        raise SubmissionError(f"{name}, line {e.lineno}: not valid Python ({e.msg})") from e
    allowed = ALLOWED_PACKAGES | set(sys.stdlib_module_names) | set(siblings)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cuda":
            raise SubmissionError(f"{name}, line {node.lineno}: calls .cuda(); move tensors and modules with "
                                  ".to(device) where device follows the inputs")
        if isinstance(node, ast.ImportFrom) and node.level:
            raise SubmissionError(f"{name}, line {node.lineno}: relative import; a graded file is uploaded "
                                  "alone and must import absolute module names")
        modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                   else [node.module] if isinstance(node, ast.ImportFrom) else [])
        for module in modules:
            top = module.split(".")[0]
            imported.add(top)
            if top not in allowed:
                raise SubmissionError(f"{name}, line {node.lineno}: imports {module!r}, which is not allowed; "
                                      f"a graded file may import only {', '.join(sorted(ALLOWED_PACKAGES))}, "
                                      "the standard library" + (f" and {', '.join(siblings)}" if siblings else ""))
    return imported


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def _between(text: str) -> str | None:
    """What a stream received between the probe's markers; None when a marker is absent."""
    start, end = text.find("@@probe-start@@\n"), text.find("\n@@probe-end@@")
    if start < 0 or end < 0:
        return None
    return text[start + len("@@probe-start@@\n"):end]


def check_import(path: Path, siblings: tuple[str, ...] = (), preload: tuple[str, ...] = PRELOADED) -> None:
    """Import the file alone (with its siblings) in a fresh folder, CUDA hidden; raises SubmissionError
    on an import error, output, a created file, CUDA initialisation or a touched global RNG."""
    name = path.name
    with tempfile.TemporaryDirectory(prefix="submission-check-") as tmp:
        work, home = Path(tmp) / "work", Path(tmp) / "home"
        work.mkdir()
        home.mkdir()
        shutil.copyfile(path, work / name)
        for sibling in siblings:
            shutil.copyfile(path.parent / f"{sibling}.py", work / f"{sibling}.py")
        before = _tree(work)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1",
               "MPLCONFIGDIR": str(home / "mpl")}
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, path.stem, json.dumps(list(preload))], cwd=work,
                                  env=env, capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise SubmissionError(f"{name}: importing it took more than {IMPORT_TIMEOUT_S} s; "
                                  "it must not train or download at import") from e
        created = sorted(_tree(work) - before)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        raise SubmissionError(f"{name}: importing it alone (CUDA hidden) fails:\n{tail}")
    out, err = _between(done.stdout), _between(done.stderr)
    if out is None or err is None:
        raise SubmissionError(f"{name}: the import probe did not complete (stdout {done.stdout[-300:]!r})")
    if out.strip() or err.strip():
        printed = (out.strip() or err.strip()).splitlines()[0]
        raise SubmissionError(f"{name}: prints at import ({'stdout' if out.strip() else 'stderr'}: {printed!r}); "
                              "move prints into functions or under `if __name__ == \"__main__\":`")
    if created:
        raise SubmissionError(f"{name}: creates files at import ({', '.join(created)}); "
                              "create folders and files inside functions only")
    probe = json.loads(done.stdout.rsplit("@@probe-end@@", 1)[1].strip().splitlines()[-1])
    if probe["cuda_initialized"]:
        raise SubmissionError(f"{name}: initialises CUDA at import; create CUDA tensors inside functions only")
    if not probe["rng_untouched"]:
        raise SubmissionError(f"{name}: seeds or draws from a global random number generator at import; "
                              "seed inside a function (e.g. fix_experiment_seed) that the user calls")


def check_static(path: Path) -> tuple[str, ...]:
    """The checks that read the source of a graded file (and of its siblings); returns the modules
    to preload for its import check."""
    if not path.is_file():
        raise SubmissionError(f"{path.name}: not found at {path}")
    siblings = SIBLINGS.get(path.name, ())
    imported = check_source(path, siblings)
    for sibling in siblings:
        if not (path.parent / f"{sibling}.py").is_file():
            raise SubmissionError(f"{path.name}: needs {sibling}.py beside it, not found in {path.parent}")
        imported |= check_source(path.parent / f"{sibling}.py")
    return tuple(m for m in PRELOADED if m in imported)


def check_file(path: Path) -> None:
    """Every check of one graded file."""
    check_import(path, SIBLINGS.get(path.name, ()), check_static(path))


def check_files(paths: list[Path]) -> None:
    """Every check of several graded files: the static ones first, then the imports side by side
    (one subprocess each); the first failure in the order given is raised."""
    preloads = [check_static(path) for path in paths]
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = [pool.submit(check_import, path, SIBLINGS.get(path.name, ()), preload)
                   for path, preload in zip(paths, preloads)]
    for future in futures:
        future.result()


def check_report(report: Path) -> None:
    if not report.is_file():
        raise SubmissionError(f"report PDF {report} not found: build it with `bash scripts/build_report.sh`, "
                              "or pass --report PATH (or --no-report to leave it out)")
    with open(report, "rb") as f:
        if f.read(5) != b"%PDF-":
            raise SubmissionError(f"report {report} is not a PDF file")


def make_bundle(root: Path, out: Path, report: Path | None) -> list[Path]:
    """Check every graded file in `root` (and the report unless None), then copy them into `out`.
    Nothing is written unless every check passes. Returns the files written."""
    sources = [root / name for name in GRADED]
    if report is not None:
        check_report(report)  # first: it is cheap, the import checks are not
    check_files(sources)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sources + ([report] if report is not None else []):
        target = out / (path.name if path in sources else "report.pdf")
        shutil.copyfile(path, target)
        written.append(target)
    stale = out / "report.pdf"
    if report is None and stale.exists():
        stale.unlink()  # a report of an earlier bundle must not be uploaded with this one
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/make_submission.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", default=str(ROOT / "report" / "report.pdf"), help="the report PDF")
    parser.add_argument("--out", default=str(ROOT / "submission"), help="bundle folder (created)")
    parser.add_argument("--no-report", action="store_true", help="bundle the code only")
    parser.add_argument("--root", default=str(ROOT), help="folder holding the graded files (default: the repository)")
    args = parser.parse_args(argv)
    try:
        written = make_bundle(Path(args.root), Path(args.out), None if args.no_report else Path(args.report))
    except SubmissionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    print(f"checked and bundled {len(written)} files in {args.out}: upload them to Gradescope")
    return 0


if __name__ == "__main__":
    sys.exit(main())
