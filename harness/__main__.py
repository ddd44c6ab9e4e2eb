"""`python -m harness`: the command line lives on the top floor (cli/), above the engine.
This entry shim is the one module of harness/ that imports upward; the import contract
(tests/test_layers.py) names it as its only exemption."""

from cli import main

raise SystemExit(main())
