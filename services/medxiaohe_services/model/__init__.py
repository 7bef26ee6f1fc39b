"""The model predictor: a KServe custom model around a Hugging Face vision-language folder,
with an OpenAI-compatible chat route added to KServe's FastAPI app."""
