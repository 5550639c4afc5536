"""Access: who may report and push: the auth modes, HTTP digest, the users file, API keys and rate
limits."""
