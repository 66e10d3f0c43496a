"""Curation of uncurated image pools: embed, deduplicate, balance, retrieve (tools/curate.py)."""
