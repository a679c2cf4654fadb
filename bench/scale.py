"""Batch prediction beyond one machine: texts/s of `lmadapt predict --input` here against Ray batch prediction
(`lmadapt predict --ray`) on a loopback cluster of 1 and of 2 nodes of one CPU each, on the same rows in the same run.

    python bench/scale.py                      # SST-2 validation texts repeated to --rows, a MiniLM run trained here
    python bench/scale.py --run runs/x --rows 2000

`local` runs on one core, as much as one node has (the measure of Ray's overhead); `local_2cpus` on both, as much
as the two nodes together. Each system scores the same Parquet files (the texts in --files files) into a fresh
output; the time is the whole command's (reading, scoring, writing; for Ray also shipping the run to the actors,
not starting the cluster). Rows go to bench/results/scale.json by system (local, local_2cpus, ray_1node,
ray_2nodes) and --rows: a rerun replaces its own rows. The projection for 100 nodes and 1e9 texts, read from the
measured rows, is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

from runner import ROOT, git_commit, sst2_full_run


def write_inputs(data: Path, folder: Path, rows: int, files: int) -> Path:
    """SST-2 validation texts repeated to `rows` rows, in `files` Parquet files."""
    import pandas as pd

    texts = pd.read_csv(data / "sst2" / "validation.csv")["text"].astype(str).tolist()
    frame = pd.DataFrame({"id": range(rows), "text": [texts[i % len(texts)] for i in range(rows)]})
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    size = -(-rows // files)
    for i in range(files):
        frame[i * size : (i + 1) * size].to_parquet(folder / f"texts-{i:03d}.parquet", index=False)
    return folder


def timed_local(run, inputs: Path, output: Path, cpus: int) -> float:
    """`lmadapt predict RUN --input FILE --output FILE` on one file of every row, as the CLI runs it, on `cpus` of
    this machine's cores (this process pinned to them, one batch at a time per core, one thread each)."""
    import pandas as pd
    import torch

    from lmadapt.serving.batch import predict_file

    whole = output.with_suffix(".input.parquet")
    pd.concat(pd.read_parquet(f) for f in sorted(inputs.glob("*.parquet"))).to_parquet(whole, index=False)
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, sorted(cores)[:cpus])
    torch.set_num_threads(1 if cpus == 1 else threads)
    try:
        started = time.perf_counter()
        predictor = run.inference("auto", workers=cpus)
        rows = predict_file(run, str(whole), output, predictor=predictor)
        return rows / (time.perf_counter() - started)
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)


def timed_ray(run, inputs: Path, output: Path, nodes: int, part_rows: int) -> float:
    from lmadapt.cluster import local_cluster
    from lmadapt.serving.ray_batch import predict_on_ray

    with local_cluster(nodes=nodes, cpus_per_node=1) as address:
        started = time.perf_counter()
        report = predict_on_ray(run, str(inputs), output, address, part_rows=part_rows)
        return report["rows"] / (time.perf_counter() - started)


def projection(rows: list[dict], nodes: int = 100, texts: float = 1e9) -> str:
    """What the measured rows say of `nodes` nodes scoring `texts` texts: the rate per node, times the nodes,
    times the efficiency measured from 1 to 2 nodes (assumed to hold: an assumption, not a measurement)."""
    by_system = {row["system"]: row for row in rows}
    if not {"ray_1node", "ray_2nodes"} <= set(by_system):
        return "no projection: ray_1node and ray_2nodes rows are both needed"
    one, two = by_system["ray_1node"]["texts_per_s"], by_system["ray_2nodes"]["texts_per_s"]
    efficiency = two / (2 * one)
    rate = nodes * one * efficiency
    hours = texts / rate / 3600
    local = by_system.get("local", {}).get("texts_per_s")
    lines = [
        f"measured: {one:,.0f} texts/s on 1 node of 1 CPU, {two:,.0f} on 2 ({efficiency:.0%} of twice one)"
        + (
            f"; `lmadapt predict` on 1 core: {local:,.0f} texts/s (Ray at 1 node: {one / local:.0%} of it)"
            if local
            else ""
        ),
        f"projected: {nodes} such nodes at that efficiency score {rate:,.0f} texts/s, {texts:.0e} texts in "
        f"{hours:,.1f} h ({hours / 24:,.1f} days); a node of k CPUs runs k actors, so about k times that.",
        "assumed, not measured: the efficiency from 1 to 2 nodes holds at 100; the driver writes every part (its "
        "disk and network carry every scored row), and the input is held in the object store before scoring; the "
        "figures include each command's start (shipping the run, starting the actors), which a small --rows inflates.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--run", type=Path, help="a trained run folder (default: a MiniLM SST-2 run trained here)")
    parser.add_argument("--rows", type=int, default=20000, help="texts scored by each system")
    parser.add_argument("--files", type=int, default=4, help="input Parquet files the rows are split into")
    parser.add_argument("--part-rows", type=int, default=2500, help="rows per output part of the Ray runs")
    parser.add_argument("--train-epochs", type=float, default=0.2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmadapt-scale-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
    args = parser.parse_args()

    import lmadapt

    args.workdir.mkdir(parents=True, exist_ok=True)
    run = lmadapt.load(args.run) if args.run else sst2_full_run(args.data, args.workdir, args.train_epochs)
    inputs = write_inputs(args.data, args.workdir / "inputs", args.rows, args.files)
    common = {
        "dataset": "sst2 validation, repeated",
        "texts": args.rows,
        "run": str(run.path),
        "commit": git_commit(),
        "command": "python " + " ".join(sys.argv),
        "date": date.today().isoformat(),
        "cores": os.cpu_count(),
    }
    kept = json.loads(args.out.read_text()) if args.out.exists() else []
    rows = []
    systems = {
        "local": lambda out: timed_local(run, inputs, out / "scored.parquet", cpus=1),
        "local_2cpus": lambda out: timed_local(run, inputs, out / "scored.parquet", cpus=2),
        "ray_1node": lambda out: timed_ray(run, inputs, out / "scored", 1, args.part_rows),
        "ray_2nodes": lambda out: timed_ray(run, inputs, out / "scored", 2, args.part_rows),
    }
    for system, measure in systems.items():
        out = args.workdir / system
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        if system.startswith("ray"):
            extra = {"nodes": int(system[4]), "cpus_per_node": 1, "part_rows": args.part_rows}
        else:
            extra = {"cpus": 2 if system == "local_2cpus" else 1}
        row = common | {"system": system, "texts_per_s": round(measure(out), 1)} | extra
        rows.append(row)
        print(json.dumps(row), flush=True)
    kept = [r for r in kept if r["system"] not in systems or r["texts"] != args.rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows + kept, indent=2) + "\n")
    print(projection(rows))


if __name__ == "__main__":
    main()
