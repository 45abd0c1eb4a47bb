"""Test plugin distribution sslhub-test-clashing."""
