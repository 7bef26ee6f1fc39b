"""Entity-balanced pretraining mixtures over ingested corpora."""
