"""One benchmark harness: suites read from the public files, versioned prompts, answer
extraction, resumable runs against any model client, scores with bootstrap intervals and
decontaminated subsets, and benchmark-overlap detection against training data."""
