"""Test plugin distribution sslhub-test-bad-signature."""
