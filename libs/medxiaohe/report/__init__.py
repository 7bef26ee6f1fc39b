"""Report generation: claims in report sentences, and the verifier that checks them."""
