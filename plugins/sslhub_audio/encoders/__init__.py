"""Audio encoders: a built-in log-mel frame transformer and torchaudio's wav2vec 2.0 / HuBERT."""
