"""`check`: run the reference suite and fail (exit 1) when quality regresses."""

from __future__ import annotations

NAME = "check"
HELP = "run the CI reference suite and compare with the stored expected results (exit 1 on regression)"


def add_arguments(p) -> None:
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--only", help="comma-separated entries OPTIMIZER:PROBLEM (default: all)")
    p.add_argument("--update", action="store_true",
                   help="store the results of these runs as the new expected values")
    p.add_argument("--runs-dir", help="keep the runs here (re-running skips finished ones); "
                                      "default: a temporary directory, removed afterwards")
    p.add_argument("--reference", help="reference file (default studies/expected/reference.json)")


def main(args) -> int:
    import tempfile
    import time
    from pathlib import Path

    from harness import store
    from studies import regression
    from harness.errors import UsageError

    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be >= 1")
    path = Path(args.reference) if args.reference else regression.REFERENCE
    ref = regression.load(path)
    entries = []
    for entry in regression.select(ref, args.only):
        why = regression.runnable(entry)
        if why:
            print(f"skipped {regression.entry_key(entry)}: {why}")
        elif not entry.get("expected") and not args.update:
            print(f"skipped {regression.entry_key(entry)}: no expected values stored yet; record them with "
                  f"`python -m harness check --update --only {regression.entry_key(entry)}`")
        else:
            entries.append(entry)
    if not entries:
        print("nothing to check")
        return 0
    n_runs = sum(len(e["seeds"]) for e in entries)
    print(f"check: {len(entries)} entries, {n_runs} runs, {args.jobs} at a time")
    t0 = time.perf_counter()
    tmp = None
    if args.runs_dir:
        runs_dir = Path(args.runs_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="harness-check-")
        runs_dir = Path(tmp.name)
    try:
        results = regression.run_entries(entries, runs_dir, args.jobs)
    finally:
        if tmp is not None:
            tmp.cleanup()
    took = time.perf_counter() - t0
    if args.update:
        failed = [(k, s) for k, ss in results.items() for s in ss if s.get("status") != "ok"]
        if failed:
            k, s = failed[0]
            print(f"error: not updating: {k} seed {s.get('seed')} ended {s.get('status')}: {s.get('reason')}")
            return 1
        for entry in entries:
            summaries = sorted(results[regression.entry_key(entry)], key=lambda s: s["seed"])
            entry["expected"] = {q: regression.expectation(entry, [float(s[q]) for s in summaries], q)
                                 for q in regression.QUANTITIES}
        store.write_json(path, ref)
        print(f"updated {len(entries)} entries in {path} ({took:.0f}s)")
        return 0
    lines = [line for e in entries for line in regression.compare(e, results[regression.entry_key(e)])]
    print(regression.table(lines))
    bad = [line for line in lines if line.verdict in ("REGRESSION", "FAILED")]
    better = [line for line in lines if line.verdict == "better"]
    if better:
        print(f"{len(better)} quantities beat the reference by more than the tolerance; "
              "if intended, record them with --update --only ...")
    if bad:
        print(f"check FAILED: {len(bad)} regressions ({took:.0f}s)")
        return 1
    print(f"check passed: {len(lines)} quantities within bounds ({took:.0f}s)")
    return 0
