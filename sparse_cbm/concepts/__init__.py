"""Concept sources (ConceptNet, an LLM, a file) and the concept table they fill."""
