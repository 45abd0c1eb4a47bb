"""sslhub built-in text plugin."""
