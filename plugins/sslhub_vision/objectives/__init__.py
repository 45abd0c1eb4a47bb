"""Image pretext tasks."""
