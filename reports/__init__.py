"""Turning stored runs into tables (pandas) and figures (matplotlib); see reports.index.build."""
