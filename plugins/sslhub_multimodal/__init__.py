"""sslhub built-in multimodal plugin: image-text pairs and CLIP."""
