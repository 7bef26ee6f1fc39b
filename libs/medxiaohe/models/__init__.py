"""Models: where their folders come from (the store, s3://, a local folder), the tiny
vision-language model built from a config, and loading a vision-language folder."""
