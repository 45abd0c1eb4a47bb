"""Audio pretext tasks: masked prediction of log-mel frames or of k-means cluster labels."""
