"""Load generator and report for any OpenAI-compatible server."""
