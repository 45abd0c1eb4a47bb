"""Test plugin distribution sslhub-test-broken-import: its plugin module cannot be imported."""
