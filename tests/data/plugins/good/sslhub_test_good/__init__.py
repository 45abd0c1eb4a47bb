"""Test plugin distribution sslhub-test-good: loads cleanly."""
