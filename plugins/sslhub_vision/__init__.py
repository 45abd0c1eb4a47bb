"""sslhub built-in vision plugin."""
