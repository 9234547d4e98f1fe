"""The problems: one experiment each (training loop, artifacts), importing its graded file."""
