"""Problem families; each module registers its named problems on import."""
