"""GRPO learner. `learner.grpo` holds the I/O-free math; the trainer and the Ray driver build on it."""
