"""Data: sources of (key, bytes, label), decoding, multi-crop views, samplers and loaders."""
