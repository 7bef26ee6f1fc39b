"""Knowledge-centric synthesis: verified questions for the entities a corpus barely covers."""
