"""Test plugin distribution sslhub-test-misspelt-hook."""
