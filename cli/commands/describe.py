"""`describe NAME [--json]`: what one optimizer or problem is and every --set it takes.

Defaults are the name's own (a variant's or a problem size's presets applied, as
`OptimizerEntry.schema()` and `ProblemEntry.schema()` give them); a problem's parameter count is counted without
allocating anything (`param_count()` of `ProblemEntry.create()`, as `list` does).
"""

from __future__ import annotations

import json

NAME = "describe"
HELP = "show an optimizer's or a problem's kinds, reference and hyperparameters (--set keys)"


def add_arguments(p) -> None:
    p.add_argument("name", help="an optimizer or problem name (see `list`)")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")


def _params(schema) -> list[dict]:
    return [{"name": key, "type": p.type.__name__, "default": p.default, "low": p.low, "high": p.high,
             "choices": list(p.choices) if p.choices is not None else None, "optional": p.optional,
             "help": p.help} for key, p in sorted(schema.items())]


def optimizer_info(entry) -> dict:
    from harness import registry

    cls = entry.factory
    base = registry.base_optimizer(entry)
    return {"type": "optimizer", "name": entry.name, "kinds": list(entry.kinds),
            "description": entry.description, "reference": cls.REFERENCE,
            "variant_of": base if entry.presets else None,
            "distributed": cls.DISTRIBUTED, "problem_defaults": cls.PROBLEM_DEFAULTS,
            "hyperparameters": _params(entry.schema()),
            "tuning_space": _tuning_space(entry, base)}


def _tuning_space(entry, base) -> dict | None:
    """The optimizer's default tuning space for `tune` (optimizers/tuning/), if it has one."""
    from studies import tuning_space
    from harness.errors import UsageError

    try:
        space = tuning_space.load(entry.name, "", base, entry.schema())
    except UsageError:
        return None
    families = sorted({p.stem.split(".", 1)[1] for n in (entry.name, base) if n
                       for p in tuning_space.TUNING_DIR.glob(f"{n}.*.json")})
    return {"space": space.to_json(), "files": list(space.sources), "family_overrides": families}


def problem_info(entry) -> dict:
    from harness import registry

    from harness.problem import SearchSpaceProblem

    cls = entry.factory
    problem = entry.create()   # constructed, nothing allocated
    runs_with = sorted(e.name for e in registry.OPTIMIZERS.values() if set(e.kinds) & set(entry.kinds))
    return {"type": "problem", "name": entry.name, "family": entry.family or entry.name,
            "kinds": list(entry.kinds), "description": entry.description, "reference": cls.REFERENCE,
            "param_count": problem.param_count(),
            "search_dims": len(problem.space) if isinstance(problem, SearchSpaceProblem) else None,
            "metric": {"name": cls.METRIC, "higher_is_better": cls.METRIC_HIGHER_IS_BETTER},
            "eval_every": cls.EVAL_EVERY,
            "optimizer_defaults": {e.name: e.factory.PROBLEM_DEFAULTS[entry.family]
                                   for e in registry.OPTIMIZERS.values()
                                   if entry.family in e.factory.PROBLEM_DEFAULTS and not e.presets},
            "optimizers": runs_with, "hyperparameters": _params(entry.schema())}


def _range(h: dict) -> str:
    if h["choices"] is not None:
        text = "one of " + "|".join(map(str, h["choices"]))
    elif h["low"] is not None or h["high"] is not None:
        text = f"[{h['low'] if h['low'] is not None else '-inf'}, {h['high'] if h['high'] is not None else 'inf'}]"
    else:
        text = "-"
    return text + (" or none" if h["optional"] else "")


def render(info: dict) -> str:
    from cli.commands._common import text_table
    from cli.commands.list import _fmt_count

    head = f"{info['type']} {info['name']}"
    if info.get("variant_of"):
        head += f"  (variant of {info['variant_of']}: same code, these defaults)"
    fields = [("kinds", ", ".join(info["kinds"])), ("description", info["description"]),
              ("reference", info["reference"] or "-")]
    if info["type"] == "optimizer":
        fields.append(("torchrun", "yes (shards its work over ranks)" if info["distributed"] else "no"))
        if info["tuning_space"]:
            t = info["tuning_space"]
            dims = "; ".join(f"{k} {v['feasible_points']}" if "feasible_points" in v else
                             f"{k} [{v['min']:g}, {v['max']:g}] {v['scaling']}" for k, v in t["space"].items())
            more = f" (other space on: {', '.join(t['family_overrides'])})" if t["family_overrides"] else ""
            fields.append(("tuning space", f"{dims}{more}; `tune`, {', '.join(t['files'])}"))
        for family, hp in sorted(info["problem_defaults"].items()):
            fields.append((f"defaults on {family}", ", ".join(f"{k}={v!r}" for k, v in hp.items())))
    else:
        direction = "higher is better" if info["metric"]["higher_is_better"] else "lower is better"
        fields += [("family", info["family"]), ("parameters", _fmt_count(info["param_count"]))]
        if info["search_dims"] is not None:
            fields.append(("search space", f"{info['search_dims']} dimensions"))
        fields += [
                   ("metric", f"{info['metric']['name']} ({direction}), every {info['eval_every']} steps"),
                   ("optimizers", ", ".join(info["optimizers"]))]
        for opt, hp in sorted(info["optimizer_defaults"].items()):
            fields.append((f"defaults for {opt}", ", ".join(f"{k}={v!r}" for k, v in hp.items())))
    width = max(len(k) for k, _ in fields)
    lines = [head] + [f"  {k.ljust(width)}  {v}" for k, v in fields] + [""]
    hps = info["hyperparameters"]
    if hps:
        lines.append("hyperparameters (--set KEY=VALUE):")
        rows = [[h["name"], h["type"], repr(h["default"]), _range(h), h["help"]] for h in hps]
        lines.append(text_table(rows, ["key", "type", "default", "range", "help"]))
    else:
        lines.append("hyperparameters: none")
    return "\n".join(lines)


def main(args) -> int:
    from harness import registry

    found = registry.find(args.name)   # UsageError (exit 2) with close matches
    infos = [optimizer_info(e) if what == "optimizer" else problem_info(e) for what, e in found]
    if args.json:
        # one object: the entry's, or {"name", "optimizer", "problem"} when a name is both
        obj = infos[0] if len(infos) == 1 else {"name": found[0][1].name, **{i["type"]: i for i in infos}}
        print(json.dumps(obj, indent=2, default=str))
        return 0
    if len(infos) > 1:
        print(f"{found[0][1].name!r} is both an optimizer and a problem; both follow.\n")
    print("\n\n".join(render(i) for i in infos))
    return 0
