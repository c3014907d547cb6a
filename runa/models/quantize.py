"""``runa models quantize``: llama.cpp's quantizer, in a child process, leaving no half file.

``llama_model_quantize`` is one long C call: Python cannot interrupt it, and a full
disk makes it fail after writing most of the file. So it runs in a child process
(this module's ``main``) that prints llama.cpp's log lines; the parent reads the
``[ 3/ 21]`` lines as progress, and on Ctrl-C, a failure or a full disk kills the
child and deletes the temporary file. A dry run first (llama.cpp's ``dry_run``) says
how big the result will be, checked against the free space before anything is
written; the result appears under its final name only when it is complete and checked.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runa.models.errors import ModelError, ModelSpaceError
from runa.models.gguf_info import read_model_info
from runa.models.library import ModelEntry, read_entry, sha256_of, sidecar

#: The file types llama.cpp's quantizer writes, by the name people use (Q4_K_M, Q8_0, F16 …).
_PREFIX = "LLAMA_FTYPE_MOSTLY_"
_STEP = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")
_SIZE = re.compile(r"quant size\s*=\s*([0-9.]+) MiB")
#: Room kept beyond the dry run's size (the header, the alignment, rounding of its MiB).
_MARGIN = 1 << 20


def quant_types() -> dict[str, int]:
    import llama_cpp

    return {name.removeprefix(_PREFIX): int(getattr(llama_cpp, name))
            for name in dir(llama_cpp) if name.startswith(_PREFIX)}


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


Runner = Callable[[Sequence[str]], "subprocess.Popen[str]"]


def _spawn(argv: Sequence[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")


def worker_argv(source: Path, target: Path, kind: str, *, dry_run: bool) -> list[str]:
    return [sys.executable, "-m", "runa.models.quantize", str(source), str(target), kind,
            *(["--dry-run"] if dry_run else [])]


def _run(argv: Sequence[str], spawn: Runner,
         on_line: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run the child to its end; its exit status and last lines. Any exception (Ctrl-C too)
    kills it first."""
    child = spawn(argv)
    tail: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            tail = [*tail[-19:], line.rstrip("\n")]
            on_line(line)
        return child.wait(), tail
    except BaseException:
        child.kill()
        child.wait()
        raise


def quantize_model(
    entry: ModelEntry,
    kind: str,
    models_dir: Path,
    *,
    name: str | None = None,
    progress: Callable[[Progress], None] = lambda p: None,
    spawn: Runner = _spawn,
    free_space: Callable[[Path], int] = lambda d: shutil.disk_usage(d).free,
) -> ModelEntry:
    """Write ``entry`` quantized to ``kind`` as ``<name>.gguf`` in ``models_dir`` (default
    name ``<entry>-<kind>``), with its sidecar; the new entry."""
    kind = kind.upper()
    known = quant_types()
    if kind not in known:
        raise ModelError(f"unknown quantization {kind!r}; llama.cpp writes: "
                         f"{', '.join(sorted(known))}")
    if entry.info is None:
        raise ModelError(entry.problem or f"{entry.path}: not a usable model")
    stem = (name or f"{entry.name}-{kind.lower()}").removesuffix(".gguf")
    target = models_dir / f"{stem}.gguf"
    if target.exists():
        raise ModelError(f"{target} already exists; 'runa models rm {stem}' first, or "
                         "choose another --name")
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = models_dir / f".{stem}.gguf.partial"
    sizes: list[float] = []
    status, tail = _run(worker_argv(entry.path, partial, kind, dry_run=True), spawn,
                        lambda line: sizes.extend(float(m) for m in _SIZE.findall(line)))
    if status or not sizes:
        raise ModelError(f"llama.cpp cannot quantize {entry.path} to {kind}: "
                         f"{_last_words(tail)}")
    needed = int(sizes[-1] * (1 << 20)) + _MARGIN
    free = free_space(models_dir)
    if free < needed:
        raise ModelSpaceError(f"{models_dir} has {free >> 20} MiB free; {stem}.gguf needs "
                              f"about {needed >> 20} MiB (llama.cpp's dry run); nothing written")

    def on_line(line: str) -> None:
        step = _STEP.match(line)
        if step:
            progress(Progress(int(step.group(1)), int(step.group(2))))

    try:
        status, tail = _run(worker_argv(entry.path, partial, kind, dry_run=False), spawn,
                            on_line)
        if status:
            free = shutil.disk_usage(models_dir).free  # the disk as it is, half file and all
            if free < _MARGIN:
                raise ModelSpaceError(f"{models_dir} filled up while writing {stem}.gguf "
                                      f"({free >> 20} MiB free); nothing kept")
            raise ModelError(f"llama.cpp could not quantize {entry.path}: {_last_words(tail)}")
        info = read_model_info(partial)
        sidecar(target).write_text(json.dumps({
            "name": stem, "role": entry.role, "source": str(entry.path),
            "quantized_from": entry.sha256, "sha256": sha256_of(partial),
            "bytes": info.file_size, "architecture": info.architecture,
            "quantization": info.quantization}, indent=2) + "\n")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        sidecar(target).unlink(missing_ok=True)
        raise
    return read_entry(target)


def _last_words(tail: list[str]) -> str:
    useful = [line for line in tail if line.strip() and not _STEP.match(line)]
    return "; ".join(useful[-2:]) or "no reason given"


def main(argv: Sequence[str]) -> int:
    """The child: quantize ``argv[0]`` to ``argv[1]`` as ``argv[2]``, llama.cpp's log on
    stdout (``--dry-run``: only say the size)."""
    import llama_cpp

    source, target, kind = argv[:3]

    @llama_cpp.llama_log_callback
    def log(_level: int, text: bytes, _data: ctypes.c_void_p) -> None:
        sys.stdout.write(text.decode("utf-8", errors="replace"))
        sys.stdout.flush()

    llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = quant_types()[kind]
    params.dry_run = "--dry-run" in argv[3:]
    params.nthread = 0
    status = llama_cpp.llama_model_quantize(source.encode(), target.encode(),
                                            ctypes.byref(params))
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
