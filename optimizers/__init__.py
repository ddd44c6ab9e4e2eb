"""Optimizer adapters; each module registers its optimizer(s) on import."""
