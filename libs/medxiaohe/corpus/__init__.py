"""The corpus pipeline: readers -> de-identification -> filters -> MET tagging -> dedup -> shards,
with coverage of the entity tree. A pipeline is a list of small steps, ``run(records) -> records``;
dropped records are kept with their reason."""
