"""Step time of optim_nb against torch.optim on every path, interleaved in one run.

    .venv/bin/python benchmarks/bench.py            # the full table (a few minutes, compiles once)
    .venv/bin/python benchmarks/bench.py --quick    # smaller tensors, two optimizers
    .venv/bin/python benchmarks/bench.py --markdown benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench.py --paths fused --kinds step,grad_scaler   # under GradScaler too

For each optimizer and parameter set it prints the median step time of optim_nb and torch.optim on
each path (loop = foreach=False, foreach = foreach=True, fused = fused=True; where torch.optim has no
fused path, RMSprop and Adadelta, and where the authors' package has none, Lion and the schedule-free
optimizers, those rows time optim_nb alone), the
ratio ours/torch, the achieved GB/s (minimal bytes per element moved by one step, see the chapter on speed, 53_speed)
against this machine's copy bandwidth, and the bytes of optimizer state of both (which must be
equal). The two libraries are timed alternately, round after round, so that drift in the machine's
load hits both alike. The optimizers, their options, their state tensors and whether torch has a fused
path come from the registry (optim_nb.registry); the timing helpers from optim_nb.speed. Targets (reported, never asserted): default within 1.05x of torch's default,
our fastest within 1.10x of torch's fastest, >= 80 % of copy bandwidth on the large tensors.
"""
import argparse, datetime, inspect, math, platform, statistics
import torch
import optim_nb
from optim_nb.registry import REGISTRY
from optim_nb.speed import (bytes_per_element, copy_bandwidth, library, seconds, step_seconds, timed_optimizer,
                            update_bandwidth)


def grad_scaler_seconds(opt, min_run_time: float = 0.2) -> float:
    """Median seconds of `scaler.step(opt); scaler.update()` under torch.amp.GradScaler. The scale is
    kept at 1 so that the gradients keep their values from call to call, while every call still
    takes the AMP path: the inf check, and the unscaling (in the kernel for fused=True, where the
    optimizer sets `_step_supports_amp_scaling`; by GradScaler.unscale_ before the step otherwise)."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=1 << 30)
    scaler.scale(torch.ones(()))  # GradScaler makes its scale tensor on first use
    return seconds("scaler.step(opt); scaler.update()", min_run_time, opt=opt, scaler=scaler)


# What one timed call of a row does, by kind: a function (optimizer, min_run_time) -> median seconds.
# A new kind of row is one more function here, chosen with --kinds.
KINDS = {"step": step_seconds, "grad_scaler": grad_scaler_seconds}

RESNET18 = ([(64, 3, 7, 7)] + [(64,)] * 2 + [(64, 64, 3, 3), (64,), (64,)] * 4
            + [(128, 64, 3, 3), (128,), (128,), (128, 128, 3, 3), (128,), (128,), (128, 64, 1, 1), (128,), (128,)]
            + [(128, 128, 3, 3), (128,), (128,)] * 2
            + [(256, 128, 3, 3), (256,), (256,), (256, 256, 3, 3), (256,), (256,), (256, 128, 1, 1), (256,), (256,)]
            + [(256, 256, 3, 3), (256,), (256,)] * 2
            + [(512, 256, 3, 3), (512,), (512,), (512, 512, 3, 3), (512,), (512,), (512, 256, 1, 1), (512,), (512,)]
            + [(512, 512, 3, 3), (512,), (512,)] * 2 + [(1000, 512), (1000,)])


def param_sets(quick):
    n = 1 << (20 if quick else 23)
    small = [(17 + 31 * (i % 13),) if i % 2 else (8, 4 + i % 7) for i in range(500 if quick else 2000)]
    return {"large": [(n,)] * 4, "resnet18": RESNET18, "small": small}


def shapes_for(entry, shapes):
    """The shapes `entry` is timed on: the set's, or for a '2-D' entry (Entry.shapes: matrices only) the
    set's weights as the matrices they multiply (out × in·kh·kw for a convolution), its vectors left
    out; a set of vectors only (large) as matrices of 64 rows (Newton–Schulz costs rows² per element)."""
    if entry.shapes != "2-D":
        return shapes
    matrices = [(s[0], math.prod(s[1:])) for s in shapes if len(s) >= 2]
    return matrices or [(64, math.prod(s) // 64) for s in shapes]


def state_bytes(opt):
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if torch.is_tensor(t) and t.dim() > 0)


def fmt(x, scale, spec):
    "`x * scale` formatted by `spec`, or a dash (right-aligned to the same width) for None."
    width = int(spec.split(".")[0] or 0)
    return "—".rjust(width) if x is None else format(x * scale, spec)


def label(row):
    "The path of a row, and its kind where it is not a plain step."
    return row["path"] if row["kind"] == "step" else f"{row['path']}, {row['kind']}"


def has_path(cls, path) -> bool:
    "Does `cls` take the flag of `path`? (Adafactor has no `fused` argument, so no fused row)"
    return path == "loop" or path in inspect.signature(cls).parameters


def run(names, sets, rounds, min_time, paths=("loop", "foreach", "fused"), kinds=("step",)):
    bw, rmw = copy_bandwidth(1 << 24, 1.0), update_bandwidth(1 << 24, 1.0)
    rows = []
    print(f"copy bandwidth: {bw:.1f} GB/s, x.add_(y): {rmw:.1f} GB/s  "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print("(% copy can pass 100: copy_ also reads its destination (write-allocate); an update writes only what it read)")
    w = max(len("optimizer"), *(len(n) for n in names))  # the name column fits the longest name
    print(f"{'optimizer':{w}} {'params':8} {'path':7} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} "
          f"{'ours GB/s':>9} {'% copy':>6} {'state ours/torch MB':>20}")
    for name in names:
        entry = REGISTRY[name]
        for set_name, shapes in sets.items():
            shapes = shapes_for(entry, shapes)
            numel = sum(torch.Size(s).numel() for s in shapes)
            moved = bytes_per_element(entry.state_tensors) * numel
            for kind in kinds:
                for path in [p for p in paths if has_path(entry.cls, p)]:
                    row = time_row(entry, kind, path, shapes, rounds, min_time)
                    row.update(optimizer=name, params=set_name, gbs=moved / row["ours"] / 1e9,
                               torch_gbs=moved / row["torch"] / 1e9 if row["torch"] else None,
                               pct=100 * moved / row["ours"] / 1e9 / bw)
                    rows.append(row)
                    sa, sb = row["state_ours"], row["state_torch"]
                    print(f"{name:{w}} {set_name:8} {label(row):7} {row['ours']*1e3:9.3f} {fmt(row['torch'], 1e3, '9.3f')} "
                          f"{fmt(row['ratio'], 1, '6.2f')} {row['gbs']:9.1f} {row['pct']:5.0f}% {sa/1e6:9.1f} / {sb/1e6:<9.1f}"
                          + ("" if sa == sb else "  STATE DIFFERS"), flush=True)
    return (bw, rmw), rows


def time_row(entry, kind, path, shapes, rounds, min_time):
    "One row: optim_nb and torch.optim (where torch has the path) timed alternately, round after round."
    timer = KINDS[kind]
    ours = timed_optimizer(library(entry, entry.cls), entry.name, shapes, path, **entry.bench_options)
    # the reference as its users pick a path: Lion's foreach=True is lion_pytorch.foreach.Lion (Entry.reference_paths)
    reference = entry.reference_paths
    torch_has = has_path(reference, path) and (path != "fused" or entry.reference_fused)  # Muon: no foreach
    theirs = timed_optimizer(library(entry, reference), entry.name, shapes, path, **entry.bench_options) if torch_has else None
    contenders = (("ours", ours),) + ((("torch", theirs),) if theirs else ())
    times = {"ours": [], "torch": []}
    for _ in range(rounds):  # interleaved: ours, torch, ours, torch, ...
        for who, opt in contenders:
            times[who].append(timer(opt, min_time))
    a = statistics.median(times["ours"])
    b = statistics.median(times["torch"]) if theirs else None
    sb = state_bytes(theirs or timed_optimizer(library(entry, reference), entry.name, shapes, "loop", **entry.bench_options))
    return dict(kind=kind, path=path, ours=a, torch=b, ratio=a / b if b else None,
                state_ours=state_bytes(ours), state_torch=sb)


def summary(rows):
    lines = []
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        for set_name in dict.fromkeys(r["params"] for r in rows):
            rs = [r for r in rows if r["optimizer"] == name and r["params"] == set_name and r["kind"] == "step"]
            if not rs:
                continue
            default = next((r for r in rs if r["path"] == "loop"), None)  # torch's CPU default: the loop
            ours_best = min(rs, key=lambda r: r["ours"])
            torch_best = min((r for r in rs if r["torch"] is not None), key=lambda r: r["torch"], default=None)
            lines.append((name, set_name, default["ratio"] if default else None, ours_best["path"],
                          torch_best["path"] if torch_best else "—",
                          ours_best["ours"] / torch_best["torch"] if torch_best else None,
                          max(r["pct"] for r in rs)))
    return lines


def markdown(bws, rows, lines):
    bw, rmw = bws
    out = [f"# Benchmark results\n",
           f"{datetime.date.today()} · {platform.node()} · {platform.processor() or platform.machine()} · "
           f"torch {torch.__version__} · {torch.get_num_threads()} threads · copy bandwidth {bw:.1f} GB/s · "
           f"x.add_(y) {rmw:.1f} GB/s\n",
           "The % of copy can exceed 100: `copy_` also reads its destination's cache lines before writing "
           "them (write-allocate), an update writes only tensors it has just read.\n",
           "Produced by `.venv/bin/python benchmarks/bench.py`. Ratio = optim_nb time / torch.optim time "
           "(lower is better); GB/s = minimal bytes per step (p, g and state read, p and state written) / time.\n",
           "| optimizer | params | path | ours ms | torch ms | ratio | ours GB/s | torch GB/s | % of copy | state bytes equal |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['optimizer']} | {r['params']} | {label(r)} | {r['ours']*1e3:.3f} | {fmt(r['torch'], 1e3, '.3f')} | "
                   f"{fmt(r['ratio'], 1, '.2f')} | {r['gbs']:.1f} | {fmt(r['torch_gbs'], 1, '.1f')} | {r['pct']:.0f} % | "
                   f"{'yes' if r['state_ours'] == r['state_torch'] else 'NO'} |")
    out += ["", "Targets: default (loop on CPU) within 1.05× of torch's default; our fastest within 1.10× of "
            "torch's fastest; ≥ 80 % of copy bandwidth on the large tensors.", "",
            "| optimizer | params | default ratio | our fastest | torch's fastest | fastest ratio | best % of copy |",
            "|---|---|---:|---|---|---:|---:|"]
    for l in lines:
        out.append(f"| {l[0]} | {l[1]} | {fmt(l[2], 1, '.2f')} | {l[3]} | {l[4]} | {fmt(l[5], 1, '.2f')} | {l[6]:.0f} % |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller tensors, SGD and Adam only")
    ap.add_argument("--optimizers", default=None, help="comma-separated, e.g. SGD,Adam")
    ap.add_argument("--sets", default=None, help="comma-separated subset of large,resnet18,small")
    ap.add_argument("--paths", default="loop,foreach,fused", help="comma-separated subset of loop,foreach,fused")
    ap.add_argument("--kinds", default="step", help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per case")
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    names = args.optimizers.split(",") if args.optimizers else (
        ["SGD", "Adam"] if args.quick else list(REGISTRY))
    sets = param_sets(args.quick)
    if args.sets:
        sets = {k: sets[k] for k in args.sets.split(",")}
    rounds = args.rounds or (3 if args.quick else 5)
    bw, rows = run(names, sets, rounds, 0.1 if args.quick else 0.2, args.paths.split(","), args.kinds.split(","))
    lines = summary(rows)
    w = max(len("optimizer"), *(len(l[0]) for l in lines))
    print(f"\n{'optimizer':{w}} params    default  fastest(ours/torch)  ratio  best %copy")
    for l in lines:
        print(f"{l[0]:{w}} {l[1]:9} {fmt(l[2], 1, '6.2f')}   {l[3]:>7}/{l[4]:<7}    {fmt(l[5], 1, '6.2f')}  {l[6]:5.0f}%")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(bw, rows, lines))
        print("wrote", args.markdown)


if __name__ == "__main__":
    main()
