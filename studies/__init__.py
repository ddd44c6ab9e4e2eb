"""Studies: registered experiments built from the floors below (reproductions, tuning, the
CI regression check, the memory table); their tables and figures come from reports/."""
