"""sslhub built-in audio plugin."""
