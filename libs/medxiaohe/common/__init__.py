"""Settings, the error taxonomy and logging, shared by every part of the platform."""
