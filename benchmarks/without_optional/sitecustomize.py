"""On PYTHONPATH, makes the harness's optional libraries unimportable in this interpreter and
every Python it starts, as on a machine that lacks them (the GPU image): `import cma` fails and
importlib.util.find_spec("cma") is None. Used by `gpu_device.sh check` and tests/test_gpu_suite."""

import sys

OPTIONAL = ("cma", "optuna", "nevergrad", "cocoex", "cocopp", "datasets", "submitit", "mlflow",
            "pytorch_optimizer")
for _name in OPTIONAL:
    sys.modules[_name] = None
