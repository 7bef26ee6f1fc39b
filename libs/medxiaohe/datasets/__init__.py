"""Readers of the public data sets (``../shared/data/README.md``), the ground floor of the
library: each takes a path, reads the format as published, names what is missing (NotFound) or
malformed (InvalidInput), and returns plain rows. Nothing here knows what the rows are for."""
