"""A third-party modality's file decoder, for sslhub's tests."""
