"""Evaluation of frozen or fine-tuned trunks."""
