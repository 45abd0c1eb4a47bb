"""sslhub built-in autoencoder plugin."""
