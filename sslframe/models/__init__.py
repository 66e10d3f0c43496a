"""Trunks, heads and the multi-crop forward."""
