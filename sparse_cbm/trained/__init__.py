"""A trained pipeline as one Python object: ``SparseCBM.from_pretrained(folder)`` loads the CLIP backbone,
the bottleneck, its final layer and, when trained, the SALF-CBM branch, from a project that ran
``dvc repro`` or from a folder that ``save_pretrained`` wrote. See docs/python-api.md."""

from sparse_cbm.trained.model import ConceptScore, Explanation, RegionExplanation, SparseCBM

__all__ = ["SparseCBM", "Explanation", "RegionExplanation", "ConceptScore"]
