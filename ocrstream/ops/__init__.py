"""Operating a running pipeline: status, dead letters, audit, the stage launcher, the demo."""
