"""The OpenAI-compatible HTTP API: the app, its wire format, and front-ends' housekeeping requests."""
