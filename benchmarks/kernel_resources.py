"""Registers, shared memory, spills and the occupancy they allow, for every CUDA kernel of
gpugraph at the launch shape it uses, from nvcc's own report (no GPU needed).

    python benchmarks/kernel_resources.py [--arch sm_80 sm_90] [--json PATH]

Each gpugraph/kernels/*.cu is compiled as the package compiles it at run time (the same
-D options, gpugraph.kernels.cuda._OPTIONS) with ``nvcc --resource-usage``. Occupancy is
resident warps per SM over the SM's maximum, the fewest blocks that the registers, the
shared memory, the threads and the block count per SM each allow, with the limits of the
CUDA C Programming Guide's table for each compute capability (registers allocated per warp
in units of 256; 1 KiB of shared memory reserved per block by the system).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpugraph.kernels import cuda as _kernels

LIMITS = {  # per SM: 32-bit registers, max threads, max blocks, shared memory usable by blocks (bytes)
    "sm_80": {"registers": 65536, "threads": 2048, "blocks": 32, "shared": 164 * 1024, "gpu": "A100"},
    "sm_90": {"registers": 65536, "threads": 2048, "blocks": 32, "shared": 228 * 1024, "gpu": "H100/H200"},
}
_RESERVED_SHARED = 1024  # bytes of shared memory the system takes per block (sm_80 and later)


def resources(source: str, arch: str) -> dict[str, dict]:
    """{kernel: {registers, shared, spill_stores, spill_loads, stack}} from nvcc --resource-usage."""
    path = importlib.resources.files("gpugraph.kernels").joinpath(source)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [
                "nvcc",
                f"-arch={arch}",
                *_kernels._OPTIONS,
                "--resource-usage",
                "-c",
                str(path),
                "-o",
                str(Path(tmp) / "k.o"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found, name = {}, None
    for line in out.stderr.splitlines():
        if m := re.search(r"Function properties for (\w+)", line):
            name = m.group(1)
            found[name] = {"registers": 0, "shared": 0}
        elif name and (
            m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        ):
            found[name].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        elif name and "Used" in line:
            found[name]["registers"] = int(re.search(r"Used (\d+) registers", line).group(1))
            if m := re.search(r"(\d+) bytes smem", line):
                found[name]["shared"] = int(m.group(1))
    return found


def occupancy(registers: int, shared: int, threads: int, arch: str) -> tuple[float, int, str]:
    """(resident warps / maximum, blocks per SM, what limits them) at ``threads`` a block."""
    lim = LIMITS[arch]
    warps = -(-threads // 32)
    per_warp = -(-registers * 32 // 256) * 256
    by = {
        "registers": lim["registers"] // (per_warp * warps) if registers else lim["blocks"],
        "shared memory": lim["shared"] // (shared + _RESERVED_SHARED),
        "threads": lim["threads"] // threads,
        "blocks": lim["blocks"],
    }
    limit = min(by, key=by.get)
    blocks = by[limit]
    return blocks * warps / (lim["threads"] // 32), blocks, limit


def table(archs: list[str]) -> list[dict]:
    rows = []
    for source, kernels in _kernels.KERNELS.items():
        for arch in archs:
            found = resources(source, arch)
            for kernel in kernels:
                r = found[kernel]
                occ, blocks, limit = occupancy(r["registers"], r["shared"], _kernels.THREADS, arch)
                rows.append(
                    {
                        "kernel": kernel,
                        "source": source,
                        "arch": arch,
                        "threads": _kernels.THREADS,
                        **r,
                        "blocks_per_sm": blocks,
                        "occupancy": occ,
                        "limited_by": limit,
                    }
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=list(LIMITS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    rows = table(args.arch)
    print(f"nvcc: {version}; options {' '.join(_kernels._OPTIONS)}; {_kernels.THREADS} threads a block")
    print(
        "| kernel | arch | registers | shared memory | spills (stores / loads) | blocks per SM | occupancy "
        "| limited by |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['kernel']} | {r['arch']} ({LIMITS[r['arch']]['gpu']}) | {r['registers']} | {r['shared']} B "
            f"| {r['spill_stores']} / {r['spill_loads']} B | {r['blocks_per_sm']} | {r['occupancy']:.1%} "
            f"| {r['limited_by']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
