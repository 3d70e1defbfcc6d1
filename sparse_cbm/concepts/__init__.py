"""Concept sources (ConceptNet, an LLM, a file, a dataset's annotations) and the concept table they fill."""

# concepts.source's choices: the Registry ``SOURCES`` in sparse_cbm_app/concept_sources.py

# the paper's three prompts for an LLM ({label} is the class name): the default of concepts.llm.prompts
PAPER_PROMPTS = {
    "features": "List the most important features for recognizing something as a {label}. Write them one by one.",
    "around": "List the things most commonly seen around a {label}. Write them one by one.",
    "generalization": "Give a generalization for the word {label}. Answer with a single sentence.",
}
