"""Radiology reports read as findings (a versioned vocabulary), and the verifier built on them."""
