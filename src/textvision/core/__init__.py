"""What every stage shares: errors, atomic file writes, threads, devices, the run lock, the
backbone registry and the paper's published facts."""
