"""What the runs are presented with: figures, notebook answers, summary schemas, run names."""
