"""The HTTP server: OpenAI-compatible routes over the async engine."""
