"""Closed-loop evaluation in the sim (the training issue): rollouts through the real node graph,
success rates, videos. It drives graphs, so it sits with the CLI at the top layer."""
