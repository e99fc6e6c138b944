"""Submitting documents (Kafka or the HTTP door) and waiting for their results."""
