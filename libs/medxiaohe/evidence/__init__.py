"""Evidence retrieval: passages with provenance, lexical (BM25) and dense (MiniLM) search,
fused; indexes published to the object store as versioned artifacts."""
